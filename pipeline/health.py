"""Health gates: a group counts as deployed only once its HTTP checks pass.

Dokploy's ``done`` means ``docker compose up`` returned, not that the service
answers. Each check is polled against its own deadline (``timeout_s`` in
services.toml), never with a fixed sleep; a failure names the URL, how long was
waited and the last status or error, as Kamal's poller does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import httpx

from pipeline.config import HealthCheck
from pipeline.errors import HealthCheckError
from pipeline.retry import Clock, pause

DEFAULT_INTERVAL_S = 2.0
PROBE_FLOOR_S = 2.0
_BODY_EXCERPT = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthResult:
    """One probe's outcome: ``ok`` when the status (and body text, if asked) matched."""

    url: str
    ok: bool
    status: int | None
    latency_s: float
    detail: str

    def describe(self) -> str:
        """``HTTP 503 (expected 200)`` or ``ConnectError: ...``, for messages."""
        return self.detail or (f"HTTP {self.status}" if self.status is not None else "no answer")


async def probe(http: httpx.AsyncClient, check: HealthCheck, *, timeout_s: float | None = None) -> HealthResult:
    """GET the check's URL once; transport errors become a failed result, not an exception."""
    started = time.monotonic()
    status: int | None = None
    try:
        with anyio.fail_after(timeout_s):
            response = await http.get(check.url, follow_redirects=False)
    except TimeoutError:
        return _result(check, started, None, f"no answer within {timeout_s:.1f}s")
    except httpx.RequestError as e:
        return _result(check, started, None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    status = response.status_code
    if status != check.expect_status:
        return _result(check, started, status, f"HTTP {status} (expected {check.expect_status})")
    if check.contains and check.contains not in response.text:
        body = " ".join(response.text.split())[:_BODY_EXCERPT]
        return _result(check, started, status, f"HTTP {status} but the body lacks {check.contains!r}: {body!r}")
    return HealthResult(url=check.url, ok=True, status=status, latency_s=time.monotonic() - started, detail="")


async def poll(
    http: httpx.AsyncClient,
    check: HealthCheck,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    clock: Clock = time.monotonic,
) -> tuple[HealthResult, float]:
    """Probe until the check passes or ``check.timeout_s`` runs out: the last result and the time waited."""
    started = clock()
    deadline = started + check.timeout_s
    while True:
        # Each probe may use the time left, but at least a floor, so the last probe at the
        # deadline still gets a real answer to report instead of a cut-off.
        floor = min(check.timeout_s, PROBE_FLOOR_S)
        result = await probe(http, check, timeout_s=max(deadline - clock(), floor))
        if result.ok or clock() >= deadline:
            return result, clock() - started
        await pause(interval_s, deadline=deadline, clock=clock)


async def wait_healthy(
    http: httpx.AsyncClient,
    check: HealthCheck,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    clock: Clock = time.monotonic,
) -> HealthResult:
    """The first passing result, or HealthCheckError naming the URL, the wait and the last result."""
    result, waited = await poll(http, check, interval_s=interval_s, clock=clock)
    if not result.ok:
        raise HealthCheckError(check.url, waited, result.describe())
    return result


async def check_all(
    http: httpx.AsyncClient,
    checks: Sequence[HealthCheck],
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    clock: Clock = time.monotonic,
) -> tuple[tuple[HealthResult, float], ...]:
    """Poll every check concurrently; each one's last result and wait, in the order given."""
    outcomes: list[tuple[HealthResult, float] | None] = [None] * len(checks)

    async def run(index: int, check: HealthCheck) -> None:
        outcomes[index] = await poll(http, check, interval_s=interval_s, clock=clock)

    async with anyio.create_task_group() as tg:
        for index, check in enumerate(checks):
            tg.start_soon(run, index, check)
    return tuple(o for o in outcomes if o is not None)


async def wait_all(
    http: httpx.AsyncClient,
    checks: Sequence[HealthCheck],
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    clock: Clock = time.monotonic,
) -> tuple[HealthResult, ...]:
    """Run a group's checks concurrently; all must pass, else HealthCheckError for the first failure."""
    outcomes = await check_all(http, checks, interval_s=interval_s, clock=clock)
    raise_for_failures(outcomes)
    return tuple(result for result, _ in outcomes)


def raise_for_failures(outcomes: Sequence[tuple[HealthResult, float]]) -> None:
    """HealthCheckError for the first failed outcome, mentioning how many others failed."""
    failed = [(result, waited) for result, waited in outcomes if not result.ok]
    if not failed:
        return
    result, waited = failed[0]
    last = result.describe()
    if len(failed) > 1:
        others = ", ".join(r.url for r, _ in failed[1:])
        last += f"; {len(failed) - 1} more check{'s' if len(failed) > 2 else ''} failed too: {others}"
    raise HealthCheckError(result.url, waited, last)


def _result(check: HealthCheck, started: float, status: int | None, detail: str) -> HealthResult:
    return HealthResult(url=check.url, ok=False, status=status, latency_s=time.monotonic() - started, detail=detail)
