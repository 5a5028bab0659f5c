"""The seed's deploy phase vs ``deploy_groups``, on the Dokploy double, durations scaled down.

The seed (the old GitHub Actions job) POSTs ``compose.deploy`` for the backend,
sleeps 60 s, POSTs it for the frontend, and reports success when both answered
HTTP 200. Ours pins the images, waits for Dokploy's own deployment rows, gates
each group on its health checks and rolls back on failure.

Both run against fresh doubles (real HTTP on 127.0.0.1) where the backend takes
20 s and the frontend 10 s, every duration divided by ``SCALE``. Four scenarios:
everything works; the backend deployment fails; it hangs in 'running'; it
deploys an image that fails its health check. For each, the table shows how long
each approach took to report, what it reported, and whether that matched reality
at that moment: all new images live and healthy for "success"; for a reported
failure, that the new images are not all live (and, after a rollback reported
healthy, that the previous images are live and healthy).

To be fair to the seed, which deploys moving ``:staging`` tags, the doubles behave
as if Dokploy re-pulled them: the new images are in the env before it triggers.

Run: ``.venv/bin/python -m bench.bench_deploy``. Results go to ``bench/results/deploy.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import httpx

from pipeline import envfile
from pipeline.config import parse
from pipeline.deploy import deploy_groups
from pipeline.dokploy import DokployClient
from pipeline.secret import SecretValue
from tests.support.dokploy_double import (
    BACKEND_ID,
    FAST_RETRY,
    FRONTEND_ID,
    DokployDouble,
    Vps,
    http_client,
    install_bizosaas,
    pinned,
    services_toml,
)
from tests.support.http_server import serve_asgi

SCALE = 100.0
BACKEND_S = 20.0
FRONTEND_S = 10.0
SEED_SLEEP_S = 60.0
POLL_S = 3.0
HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 60.0
DEPLOY_TIMEOUT_S = 120.0
RESULTS = Path(__file__).parent / "results" / "deploy.json"

PINS = {
    "brain-gateway": pinned("brain-gateway", "a"),
    "bizoholic-frontend": pinned("bizoholic-frontend", "b"),
    "client-portal": pinned("client-portal", "c"),
}
# service -> (compose, env variable, health path)
WHERE = {
    "brain-gateway": (BACKEND_ID, "BRAIN_GATEWAY_IMAGE", "/backend/health"),
    "bizoholic-frontend": (FRONTEND_ID, "BIZOHOLIC_FRONTEND_IMAGE", "/bizoholic/health"),
    "client-portal": (FRONTEND_ID, "CLIENT_PORTAL_IMAGE", "/portal/health"),
}
SCENARIOS = ("all good", "backend fails", "backend hangs", "backend unhealthy")


@dataclass(frozen=True)
class Outcome:
    """One approach in one scenario."""

    wall_s: float
    wall_s_unscaled: float
    reported: str
    reality: str
    matched: bool


@dataclass(frozen=True)
class Reality:
    """What is live and healthy on the doubles at one instant."""

    live: dict[str, str]  # service -> "new" | "old" | "none"
    healthy: dict[str, bool]

    def all_new_and_healthy(self) -> bool:
        return all(v == "new" for v in self.live.values()) and all(self.healthy.values())

    def describe(self) -> str:
        return ", ".join(
            f"{service.split('-')[0]} {state}{'' if self.healthy[service] else ' (unhealthy)'}"
            for service, state in self.live.items()
        )


async def observe(double: DokployDouble, http: httpx.AsyncClient, vps_url: str, previous: dict[str, str]) -> Reality:
    """Read what the double has live and probe each health endpoint once."""
    double.advance()
    live, healthy = {}, {}
    for service, (compose, variable, path) in WHERE.items():
        image = double.live.get(compose, {}).get(variable, "")
        live[service] = "new" if image == PINS[service] else "old" if image == previous[service] else "none"
        healthy[service] = (await http.get(vps_url + path)).status_code == 200
    return Reality(live, healthy)


def arrange(double: DokployDouble, vps: Vps, scenario: str) -> None:
    """Lay out the BizOSaaS composes with realistic durations and the scenario's fault."""
    install_bizosaas(double, vps, backend_s=BACKEND_S / SCALE, frontend_s=FRONTEND_S / SCALE)
    if scenario == "backend fails":
        double.script(BACKEND_ID, "error", error_log="Error response from daemon: pull access denied")
    elif scenario == "backend hangs":
        double.script(BACKEND_ID, "stuck")
    elif scenario == "backend unhealthy":
        vps.mark_bad(PINS["brain-gateway"])


def grant_repull(double: DokployDouble) -> None:
    """The moving :staging tag now names the new build; grant the seed that Dokploy re-pulls it."""
    for compose in (BACKEND_ID, FRONTEND_ID):
        wanted = {v: PINS[s] for s, (c, v, _) in WHERE.items() if c == compose}
        double.composes[compose].env = envfile.replace(double.env(compose) or "", wanted)


async def seed(http: httpx.AsyncClient, url: str, key: str) -> str:
    """The old workflow's deploy phase, step for step (its fixed sleep included, scaled)."""
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    backend = await http.post(f"{url}/api/compose.deploy", json={"composeId": BACKEND_ID}, headers=headers)
    if backend.status_code != 200:
        return "failure"
    await anyio.sleep(SEED_SLEEP_S / SCALE)  # the seed's `sleep 60`, reproduced on purpose
    frontend = await http.post(f"{url}/api/compose.deploy", json={"composeId": FRONTEND_ID}, headers=headers)
    return "success" if frontend.status_code == 200 else "failure"


async def ours(http: httpx.AsyncClient, client: DokployClient, url: str, vps_url: str) -> tuple[str, str]:
    """deploy_groups with the same durations scaled: (reported result, rollback outcome of the failed group)."""
    config = parse(services_toml(url, vps_url, health_timeout_s=HEALTH_TIMEOUT_S / SCALE))
    results = await deploy_groups(
        config,
        "staging",
        PINS,
        client=client,
        http=http,
        poll_interval_s=POLL_S / SCALE,
        deploy_timeout_s=DEPLOY_TIMEOUT_S / SCALE,
        health_interval_s=HEALTH_INTERVAL_S / SCALE,
    )
    failed = next((r for r in results if not r.ok and r.status != "skipped"), None)
    if failed is None:
        return "success", "no"
    return f"failure: {failed.group} {failed.status}, rolled back: {failed.rolled_back}", failed.rolled_back


async def run(scenario: str, approach: str) -> Outcome:
    """One approach in one scenario, on fresh doubles."""
    double = DokployDouble()
    vps = Vps(double)
    arrange(double, vps, scenario)
    previous = {s: double.live[c][v] for s, (c, v, _) in WHERE.items()}
    async with serve_asgi(double.app) as url, serve_asgi(vps.app) as vps_url, http_client() as http:
        try:
            key = SecretValue("DOKPLOY_API_KEY", double.admin_key)
            client = DokployClient(http, base_url=url, api_key=key, retry=FAST_RETRY)
            if approach == "seed":
                grant_repull(double)
            started = time.perf_counter()
            if approach == "seed":
                reported, rolled_back = await seed(http, url, double.admin_key), "no"
            else:
                reported, rolled_back = await ours(http, client, url, vps_url)
            wall = time.perf_counter() - started
            reality = await observe(double, http, vps_url, previous)
        finally:
            double.close()
    if reported == "success":
        matched = reality.all_new_and_healthy()
    else:
        matched = not reality.all_new_and_healthy()
        if rolled_back == "yes, healthy":
            matched = matched and all(v == "old" for v in reality.live.values()) and all(reality.healthy.values())
    return Outcome(
        wall_s=round(wall, 3),
        wall_s_unscaled=round(wall * SCALE, 1),
        reported=reported,
        reality=reality.describe(),
        matched=matched,
    )


async def measure() -> dict[str, object]:
    """Every scenario, both approaches, in this run."""
    rows = []
    for scenario in SCENARIOS:
        seed_outcome = await run(scenario, "seed")
        ours_outcome = await run(scenario, "ours")
        rows.append(
            {
                "scenario": scenario,
                "seed": asdict(seed_outcome),
                "ours": asdict(ours_outcome),
                "wall_ratio_ours_to_seed": round(ours_outcome.wall_s / seed_outcome.wall_s, 2),
            }
        )
    return {
        "benchmark": "deploy phase: seed workflow vs deploy_groups",
        "scale": f"durations divided by {SCALE:g}",
        "durations_s": {
            "backend_deploy": BACKEND_S,
            "frontend_deploy": FRONTEND_S,
            "seed_sleep": SEED_SLEEP_S,
            "poll_interval": POLL_S,
            "deploy_timeout": DEPLOY_TIMEOUT_S,
            "health_timeout": HEALTH_TIMEOUT_S,
        },
        "python": platform.python_version(),
        "scenarios": rows,
    }


def main(measure_: Callable[[], Awaitable[dict[str, object]]] = measure) -> int:
    """Measure, print a table, write JSON."""
    result = anyio.run(measure_)
    scenarios = result["scenarios"]
    assert isinstance(scenarios, list)
    print(f"deploy phase, {result['scale']} (times shown unscaled: real seconds at full durations)")
    print(f"  {'scenario':<18}{'approach':<6}{'time':>8}  {'matched':<8}reported / reality at that moment")
    for row in scenarios:
        for approach in ("seed", "ours"):
            o = row[approach]
            print(
                f"  {row['scenario']:<18}{approach:<6}{o['wall_s_unscaled']:>7.0f}s  "
                f"{'yes' if o['matched'] else 'NO':<8}{o['reported']} / {o['reality']}"
            )
        print(f"  {'':<18}{'ratio':<6}{row['wall_ratio_ours_to_seed']:>7.2f}x (ours / seed wall time)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
