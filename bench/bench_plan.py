"""Planning with change detection for a monorepo of 200 services.

A synthetic monorepo of 200 services (sources, a Dockerfile, a .dockerignore
and an ignored node_modules tree each) is planned twice against a local
docker-registry that already holds every service's ``src-<content key>`` image:

* baseline: read and sha256 every file under every context, with no ignore
  rules: the least any content-based change detection must do;
* ours: ``make_plan`` with the source (content keys honour .dockerignore) plus
  ``changes.lookup`` asking the registry for all 200 content tags.

One file of one service is changed before planning, so a correct plan says
exactly one ``build`` and 199 ``reuse`` (the seed rebuilds all 200). Medians
of a few rounds, as a ratio measured in the same run; results go to
``bench/results/plan.json``.

Run: ``.venv/bin/python -m bench.bench_plan`` (needs ``docker-registry``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx

from pipeline import changes
from pipeline.config import load
from pipeline.gitinfo import GitContext
from pipeline.plan import Plan, make_plan
from pipeline.registry import RegistryClient
from tests.support.images import push_image
from tests.support.registry import REGISTRY_BINARY, SKIP_REASON, run_registry

SERVICES = 200
SOURCE_FILES = 20
SOURCE_SIZE = 4096
IGNORED_FILES = 30
ROUNDS = 3
RESULTS = Path(__file__).parent / "results" / "plan.json"
GIT = GitContext(branch="staging", sha="0" * 40, event="bench", origin="bench")


def make_monorepo(root: Path, registry: str) -> Path:
    """200 services with sources, a Dockerfile, a .dockerignore and an ignored dependency tree."""
    lines = [
        f'[registry]\nhost = "{registry}"\nnamespace = "bench"\n',
        '[environments.staging]\nbranch = "staging"\ntags = ["staging", "{branch}-{sha}"]\n',
    ]
    names = [f"svc-{i:03d}" for i in range(SERVICES)]
    for name in names:
        context = root / "services" / name
        (context / "src").mkdir(parents=True)
        (context / "node_modules" / "dep").mkdir(parents=True)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
        (context / ".dockerignore").write_text("node_modules\n*.log\n")
        for f in range(SOURCE_FILES):
            (context / "src" / f"file{f}.js").write_bytes(os.urandom(SOURCE_SIZE))
        for f in range(IGNORED_FILES):
            (context / "node_modules" / "dep" / f"m{f}.js").write_bytes(os.urandom(SOURCE_SIZE))
        lines.append(f'[services.{name}]\ncontext = "services/{name}"\n')
    lines.append(f'[[groups]]\nname = "all"\nservices = {json.dumps(names)}\n')
    (root / "services.toml").write_text("\n".join(lines))
    return root / "services.toml"


def hash_everything(root: Path) -> int:
    """The baseline: sha256 of every file under services/, no rules."""
    count = 0
    for path in sorted((root / "services").rglob("*")):
        if path.is_file():
            hashlib.sha256(path.read_bytes()).digest()
            count += 1
    return count


def our_plan(root: Path, config_path: Path) -> Plan:
    """Content keys for every service: the files each build sees, .dockerignore applied."""
    return make_plan(load(config_path), GIT, source=root)


async def seed(plan: Plan, registry: RegistryClient) -> None:
    """Publish every service's content tag, as earlier runs would have."""
    limiter = anyio.CapacityLimiter(16)

    async def one(repository: str, tag: str) -> None:
        async with limiter:
            await push_image(registry, repository, tag, payload=tag.encode())

    async with anyio.create_task_group() as tg:
        for service in plan.services:
            tg.start_soon(one, service.repository, service.content_tag)


def timed(run: Callable[[], object]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


async def main() -> int:
    if not Path(REGISTRY_BINARY).exists():
        print(f"skipped: {SKIP_REASON}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp, run_registry(Path(tmp) / "registry") as running:
        root = Path(tmp) / "repo"
        config_path = make_monorepo(root, running.host)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5)) as http:
            registry = RegistryClient(http, registry=running.host)
            await seed(make_plan(load(config_path), GIT, source=root), registry)
            # One changed file: exactly one service must need a build.
            (root / "services" / "svc-042" / "src" / "file0.js").write_bytes(os.urandom(SOURCE_SIZE))
            # An ignored file changing must not count.
            (root / "services" / "svc-007" / "node_modules" / "dep" / "m0.js").write_bytes(b"changed")

            baseline, keys, lookups, actions = [], [], [], {}
            for _ in range(ROUNDS):
                baseline.append(timed(lambda: hash_everything(root)))
                started = time.perf_counter()
                plan = our_plan(root, config_path)
                keys.append(time.perf_counter() - started)
                started = time.perf_counter()
                actions = await changes.lookup(plan, registry)
                lookups.append(time.perf_counter() - started)
        builds = sorted(name for name, action in actions.items() if action == "build")
        reused = sum(action.startswith("reuse ") for action in actions.values())
        result = {
            "services": SERVICES,
            "files_per_service": SOURCE_FILES + IGNORED_FILES + 2,
            "baseline_hash_everything_s": statistics.median(baseline),
            "content_keys_s": statistics.median(keys),
            "registry_lookups_s": statistics.median(lookups),
            "ratio_keys_to_baseline": statistics.median(keys) / statistics.median(baseline),
            "ratio_plan_to_baseline": (statistics.median(keys) + statistics.median(lookups))
            / statistics.median(baseline),
            "services_to_build": builds,
            "services_reused": reused,
            "seed_would_rebuild": SERVICES,
            "correct": builds == ["svc-042"] and reused == SERVICES - 1,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"plan {SERVICES} services ({result['files_per_service']} files each), median of {ROUNDS} rounds")
    print(f"  baseline: hash every file       {result['baseline_hash_everything_s'] * 1000:8.1f} ms")
    print(f"  content keys (.dockerignore)    {result['content_keys_s'] * 1000:8.1f} ms")
    print(f"  registry lookups (200 HEADs)    {result['registry_lookups_s'] * 1000:8.1f} ms")
    print(
        f"  ratio keys/baseline: {result['ratio_keys_to_baseline']:.2f}; whole plan/baseline: "
        f"{result['ratio_plan_to_baseline']:.2f}"
    )
    print(f"  to build: {', '.join(builds) or 'none'}; reused: {reused}; the seed rebuilds {SERVICES}")
    print(f"  correct: {result['correct']}; wrote {RESULTS}")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
