"""Promotion by manifest copy vs re-pushing the image, for 7 services on a local registry.

Promoting staging to prod with ``RegistryClient.copy_tag`` moves one manifest
(a few hundred bytes) per service; re-pushing moves config and layers again.
Both run in the same process against the same docker-registry on 127.0.0.1,
all services at once (as the pipeline fans out), for a few rounds; the table
shows medians and the ratio. Results go to ``bench/results/promote.json``.

Run: ``.venv/bin/python -m bench.bench_promote`` (needs ``docker-registry``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx

from pipeline.registry import Manifest, RegistryClient
from tests.support.images import build_image, layer
from tests.support.registry import REGISTRY_BINARY, SKIP_REASON, run_registry

SERVICES = (
    "brain-gateway",
    "bizoholic-frontend",
    "coreldove-frontend",
    "client-portal",
    "admin-dashboard",
    "business-directory",
    "thrillring-gaming",
)
# Random bytes do not compress: like the already-gzipped layers of a real image.
LAYER_SIZES = (3 * 1024 * 1024, 1024 * 1024)
ROUNDS = 3
RESULTS = Path(__file__).parent / "results" / "promote.json"

Image = tuple[list[bytes], Manifest]


def make_image(service: str) -> Image:
    """Blobs (layers, then config) and the manifest of one synthetic service image."""
    layers = [layer(os.urandom(size), name=f"{service}/part{i}") for i, size in enumerate(LAYER_SIZES)]
    config, manifest = build_image(layers)
    return [blob for blob, _ in layers] + [config], manifest


async def push(client: RegistryClient, repo: str, tag: str, image: Image) -> None:
    """Upload every blob, then the manifest: what a rebuild-and-push costs."""
    blobs, manifest = image
    for blob in blobs:
        await client.push_blob(repo, blob)
    await client.put_manifest(repo, tag, manifest)


async def timed_fanout(jobs: list[Callable[[], Coroutine[Any, Any, object]]]) -> float:
    """Run every job at once in a task group; seconds until all finished."""
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(job)
    return time.perf_counter() - start


async def run(host: str) -> dict[str, object]:
    """Set up staging images, then time both ways of promoting them."""
    images = {service: make_image(service) for service in SERVICES}
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
        client = RegistryClient(http, registry=host)
        for service, image in images.items():
            await push(client, f"bench/bizosaas-{service}", "staging", image)

        async def copy(service: str, round_no: int) -> None:
            await client.copy_tag(f"bench/bizosaas-{service}", "staging", [f"prod-{round_no}"])

        async def repush(service: str, round_no: int) -> None:
            # A fresh repository each round, so every blob is really uploaded again.
            await push(client, f"bench/repush-{round_no}/bizosaas-{service}", "prod", images[service])

        copy_s: list[float] = []
        repush_s: list[float] = []
        for round_no in range(ROUNDS):
            copy_s.append(await timed_fanout([partial(copy, s, round_no) for s in SERVICES]))
            repush_s.append(await timed_fanout([partial(repush, s, round_no) for s in SERVICES]))

    image_bytes = sum(len(blob) for blob in images[SERVICES[0]][0])
    copy_median, repush_median = statistics.median(copy_s), statistics.median(repush_s)
    return {
        "benchmark": "promote 7 services staging -> prod",
        "registry": "docker-registry 2.8.2 on 127.0.0.1",
        "python": platform.python_version(),
        "services": len(SERVICES),
        "bytes_per_image": image_bytes,
        "rounds": ROUNDS,
        "copy_tag_s": copy_s,
        "repush_s": repush_s,
        "copy_tag_median_s": copy_median,
        "repush_median_s": repush_median,
        "speedup": repush_median / copy_median,
    }


def main() -> int:
    """Start a registry, measure, print a table, write JSON."""
    if not Path(REGISTRY_BINARY).exists():
        print(SKIP_REASON, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp, run_registry(Path(tmp)) as registry:
        result = anyio.run(run, registry.host)
    mib = int(str(result["bytes_per_image"])) / 2**20
    print(f"promote {result['services']} services ({mib:.1f} MiB per image), median of {ROUNDS} rounds")
    print(f"  {'method':<22}{'all services':>14}{'per service':>14}")
    for label, key in (("copy_tag (manifest)", "copy_tag_median_s"), ("re-push (blobs+man.)", "repush_median_s")):
        seconds = float(str(result[key]))
        print(f"  {label:<22}{seconds * 1000:>11.1f} ms{seconds * 1000 / len(SERVICES):>11.1f} ms")
    print(f"  copy_tag is {float(str(result['speedup'])):.1f}x faster than re-pushing")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
