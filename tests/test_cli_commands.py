"""``python -m pipeline`` deploy, status, doctor, prune, build, publish and test as real subprocesses.

Each command runs as ``.venv/bin/python -m pipeline ...`` in a source tree whose
services.toml points at the local registry, the Dokploy double and the VPS
double, with secrets passed the library-mode way: environment variables. The
environment is built from scratch (no ``GITHUB_*``, a ``PATH`` without ``dagger``),
and the processes of one test run at once, since each spends a second importing.
The doubles' deployments take no time, so the CLI's default poll interval never waits.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from pipeline import cli
from pipeline.engine import NO_ENGINE
from pipeline.errors import PipelineError
from pipeline.summary import RunSummary
from tests.support.dokploy_double import ADMIN_KEY, BACKEND_ID, FRONTEND_ID, RunningDokploy, RunningVps
from tests.support.registry import RunningRegistry, loopback_http
from tests.support.sources import PYTHON
from tests.support.world import (
    NAMESPACE,
    PREFIX,
    REGISTRY_TOKEN,
    SERVICES,
    SHA,
    SHORT,
    World,
    make_world,
)

SAFE_PATH = "/usr/bin:/bin"
FRONTEND = ("bizoholic-frontend", "client-portal")


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


@pytest.fixture
async def world(
    tmp_path: Path, registry: RunningRegistry, dokploy: RunningDokploy, vps: RunningVps, http: httpx.AsyncClient
) -> World:
    """The shared world, but with deployments that take no time: each CLI run is a real subprocess."""
    return make_world(
        tmp_path / "repo", registry_host=registry.host, dokploy=dokploy, vps=vps, http=http, durations_s=0.0
    )


def environment(world: World, **changes: str | None) -> dict[str, str]:
    """A fresh environment with both secrets; a change of None removes that variable."""
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(world.root.parent),
        "LANG": "C.UTF-8",
        "DOKPLOY_API_KEY": ADMIN_KEY,
        "GITHUB_TOKEN": REGISTRY_TOKEN,
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


async def pipeline(world: World, *args: str, env: Mapping[str, str] | None = None) -> Run:
    """Run ``python -m pipeline *args`` in the world's source tree."""
    done = await anyio.run_process(
        [PYTHON, "-m", "pipeline", *args],
        cwd=world.root,
        env=dict(env or environment(world)),
        check=False,
    )
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert "Traceback" not in run.stderr, run.stderr
    assert ADMIN_KEY not in run.stdout + run.stderr
    assert REGISTRY_TOKEN not in run.stdout + run.stderr
    return run


async def all_at_once(world: World, commands: Sequence[tuple[Sequence[str], Mapping[str, str] | None]]) -> list[Run]:
    """Run several commands concurrently; their results in the order given."""
    results: list[Run | None] = [None] * len(commands)

    async def one(index: int, args: Sequence[str], env: Mapping[str, str] | None) -> None:
        results[index] = await pipeline(world, *args, env=env)

    async with anyio.create_task_group() as tg:
        for index, (args, env) in enumerate(commands):
            tg.start_soon(one, index, args, env)
    return [r for r in results if r is not None]


def assert_usage_error(run: Run, message: str) -> None:
    """Exit 2, nothing on stdout, exactly one ``error:`` line on stderr."""
    assert run.code == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith("error: ")
    assert run.stderr.count("\n") == 1
    assert message in run.stderr


COLUMNS = ("service", "group", "change", "tags", "digest", "tests", "deployment", "status", "health")
DEPLOY = ("deploy", "--skip-build", "--branch", "staging", "--sha", SHA)


async def test_deploy_skip_build_prints_the_table_and_writes_markdown_and_json(world, tmp_path):
    """Exit 0; the table on stdout, Markdown appended to $GITHUB_STEP_SUMMARY, JSON to --summary-json."""
    published = {s: await world.seed(s, ["staging", f"staging-{SHORT}"]) for s in SERVICES}
    step_summary = tmp_path / "step-summary.md"
    step_summary.write_text("earlier step\n")

    run = await pipeline(
        world,
        *DEPLOY,
        "--summary-json",
        "summary.json",
        env=environment(world, GITHUB_STEP_SUMMARY=str(step_summary)),
    )

    assert run.code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"deploy staging {SHORT}: OK"
    header = next(line for line in lines if line.startswith("service"))
    assert header.split() == [*COLUMNS[:9], "rolled", "back", "time"]
    for service in SERVICES:
        row = next(line for line in lines if line.startswith(service + " "))
        assert published[service][:19] in row
        assert " done " in row
        assert " passed " in row
    markdown = step_summary.read_text()
    assert markdown.startswith("earlier step\n")
    assert f"### deploy staging {SHORT}: OK" in markdown
    assert "| Service | Group | Change |" in markdown
    data = json.loads((world.root / "summary.json").read_text())
    assert data["ok"] is True
    assert {o["service"]: o["digest"] for o in data["outcomes"]} == published
    assert {o["service"]: o["reference"] for o in data["outcomes"]} == {
        s: f"{world.image(s)}@{published[s]}" for s in SERVICES
    }
    assert f"{world.image('brain-gateway')}@{published['brain-gateway']}" in world.env(BACKEND_ID)
    for text in (markdown, json.dumps(data)):
        assert ADMIN_KEY not in text
        assert REGISTRY_TOKEN not in text


async def test_a_failing_deploy_exits_1_after_rolling_back(world):
    """The new frontend images fail their health checks: exit 1, the table says rolled back, the env is restored."""
    published = {s: await world.seed(s, [f"staging-{SHORT}"]) for s in SERVICES}
    world.vps.vps.mark_bad(*(f"{world.image(s)}@{published[s]}" for s in FRONTEND))

    run = await pipeline(world, *DEPLOY)

    assert run.code == 1, run.stdout + run.stderr
    assert run.stdout.startswith(f"deploy staging {SHORT}: FAILED\n")
    for service in FRONTEND:
        row = next(line for line in run.stdout.splitlines() if line.startswith(service + " "))
        assert " failed " in row
        assert row.rstrip().rsplit("  ", 2)[-2].strip() == "yes, healthy"
    assert "errors:" in run.stdout
    assert world.env(FRONTEND_ID) == world.envs[FRONTEND_ID]


async def test_usage_errors_exit_2_with_one_error_line(world):
    """A missing Dokploy key, and build/publish/test without an engine: exit 2, one 'error:' line each."""
    assert shutil.which("dagger", path=SAFE_PATH) is None
    for service in SERVICES:
        await world.seed(service, [f"staging-{SHORT}"])

    no_key, build, publish, test = await all_at_once(
        world,
        [
            (DEPLOY, environment(world, DOKPLOY_API_KEY=None)),
            (("build", "--service", "brain-gateway"), None),
            (("publish", "--branch", "staging", "--sha", SHA), None),
            (("test",), None),
        ],
    )

    assert_usage_error(no_key, "deploying needs the Dokploy API key: pass --dokploy-key")
    for run in (build, publish, test):
        assert_usage_error(run, NO_ENGINE)
    assert world.writes() == []
    assert world.env(BACKEND_ID) == world.envs[BACKEND_ID]


async def test_status_doctor_and_prune_print_their_tables(world, github):
    """status and doctor report on the doubles; prune's dry run lists the version it would delete."""
    github.add_token(REGISTRY_TOKEN)
    old = await world.seed("brain-gateway", ["staging-1111111"], payload=b"old brain")
    new = await world.seed("brain-gateway", ["staging", f"staging-{SHORT}"])
    github.push(NAMESPACE, f"{PREFIX}brain-gateway", old, ["staging-1111111"])
    github.push(NAMESPACE, f"{PREFIX}brain-gateway", new, ["staging", f"staging-{SHORT}"])
    for service in FRONTEND:
        github.push(NAMESPACE, f"{PREFIX}{service}", await world.seed(service, ["staging"]), ["staging"])

    status, doctor, prune = await all_at_once(
        world,
        [
            (("status",), None),
            (("doctor",), None),
            (("prune", "--keep", "1", "--github-api-url", github.url), None),
        ],
    )

    assert status.code == 0, status.stderr
    for compose_id in (BACKEND_ID, FRONTEND_ID):
        assert compose_id in status.stdout
    assert world.old_reference("brain-gateway") in status.stdout
    assert doctor.code == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.startswith("doctor: all environments\n")
    assert re.search(r"^all checks passed \(\d+ ok, 0 failed", doctor.stdout, re.MULTILINE)
    assert prune.code == 0, prune.stdout + prune.stderr
    assert prune.stdout.startswith("prune all: OK\n")
    assert re.search(r"^brain-gateway\s+kept 1, would delete 1\s", prune.stdout, re.MULTILINE)
    assert f"{PREFIX}brain-gateway: would delete {old[:19]} (staging-1111111;" in prune.stdout
    assert [r for r in github.requests if r.method == "DELETE"] == []


async def test_mistakes_in_outputs_flags_and_secret_variables_stop_before_anything_is_deployed(world, tmp_path):
    """Each mistake is one 'error:' line, exit 2, naming the path, flag or variable to fix; Dokploy is never written."""
    for service in SERVICES:
        await world.seed(service, [f"staging-{SHORT}"])
    (tmp_path / "step-summary-dir").mkdir()
    missing = tmp_path / "no-such-dir" / "summary.json"

    json_dir, step_dir, custom_key, status_key, source_file, timeout = await all_at_once(
        world,
        [
            ((*DEPLOY, "--summary-json", str(missing)), None),
            (DEPLOY, environment(world, GITHUB_STEP_SUMMARY=str(tmp_path / "step-summary-dir"))),
            ((*DEPLOY, "--dokploy-key-env", "MY_DOKPLOY_KEY"), None),
            (("status",), environment(world, DOKPLOY_API_KEY=None)),
            (("plan", "--offline", "--source", "services.toml"), None),
            ((*DEPLOY, "--deploy-timeout", "0"), None),
        ],
    )

    assert_usage_error(json_dir, f"the directory {missing.parent} does not exist")
    assert_usage_error(step_dir, "(from GITHUB_STEP_SUMMARY)")
    assert_usage_error(custom_key, "(library mode: set MY_DOKPLOY_KEY)")
    assert_usage_error(status_key, "reading the status needs the Dokploy API key")
    assert_usage_error(source_file, "--source services.toml is not a directory")
    assert_usage_error(timeout, "--deploy-timeout must be a positive number of seconds, got 0")
    assert world.writes() == []
    assert world.env(BACKEND_ID) == world.envs[BACKEND_ID]


async def test_a_dokploy_key_ending_in_a_newline_deploys_without_printing_it(world):
    """A key stored with its trailing newline (echo key > file) works, and is in no output (pipeline() checks)."""
    for service in SERVICES:
        await world.seed(service, [f"staging-{SHORT}"])

    run = await pipeline(world, *DEPLOY, env=environment(world, DOKPLOY_API_KEY=ADMIN_KEY + "\n"))

    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"deploy staging {SHORT}: OK\n")


def test_report_writes_the_json_summary_even_when_the_step_summary_fails(tmp_path, monkeypatch, capsys):
    """Two records of one run: a step summary that fails (after the pre-check) must not lose the JSON one."""
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a directory: appending fails
    summary = RunSummary(
        command="deploy",
        environment="staging",
        branch="staging",
        sha=SHA,
        ok=True,
        started_at=datetime.now(UTC),
        duration_s=1.0,
        outcomes=(),
        notes=(),
    )

    with pytest.raises(PipelineError, match="GITHUB_STEP_SUMMARY"):
        cli.report(summary, argparse.Namespace(summary_json=tmp_path / "summary.json"))

    assert json.loads((tmp_path / "summary.json").read_text())["ok"] is True
    assert capsys.readouterr().out.startswith(f"deploy staging {SHORT}: OK\n")
