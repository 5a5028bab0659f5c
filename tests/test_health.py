"""Tests for pipeline.health: probes, deadline-bounded polling, concurrent group gates."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pipeline.config import HealthCheck
from pipeline.errors import HealthCheckError
from pipeline.health import check_all, probe, wait_all, wait_healthy
from tests.support.dokploy_double import RunningVps, http_client
from tests.support.http_server import serve_asgi

INTERVAL = 0.01


@pytest.fixture
async def http():
    async with http_client() as client:
        yield client


@pytest.fixture
def live(dokploy, vps):
    """A compose whose API image is live and good, served at /api/health."""
    compose = dokploy.double.add_compose(compose_id="live", env="API_IMAGE=api:1", status="done")
    vps.vps.serve("/api/health", service_id=compose.id, variable="API_IMAGE")
    return compose


def check(vps: RunningVps, path: str, **kwargs: Any) -> HealthCheck:
    kwargs.setdefault("timeout_s", 0.3)
    return HealthCheck(url=f"{vps.url}{path}", **kwargs)


async def test_probe_passes_on_the_expected_status_and_text(http, vps, live):
    """A 200 whose body holds the expected text is ok, with its status and latency."""
    result = await probe(http, check(vps, "/api/health", contains='"status":"ok"'))
    assert (result.ok, result.status, result.detail) == (True, 200, "")
    assert result.latency_s >= 0


async def test_probe_reports_wrong_status_and_missing_text(http, vps, live):
    """A wrong status or a body without the expected text fails, saying which."""
    vps.vps.mark_bad("api:1")
    bad = await probe(http, check(vps, "/api/health"))
    assert (bad.ok, bad.status, bad.detail) == (False, 503, "HTTP 503 (expected 200)")
    vps.vps.bad.clear()
    text = await probe(http, check(vps, "/api/health", contains="ready"))
    assert not text.ok
    assert "lacks 'ready'" in text.detail
    assert (await probe(http, check(vps, "/api/health", expect_status=204))).detail == "HTTP 200 (expected 204)"


async def test_probe_turns_transport_errors_into_results(http):
    """Nothing listening is a failed result naming the error, not an exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe(http, HealthCheck(url=f"http://127.0.0.1:{port}/health", timeout_s=1))
    assert (result.ok, result.status) == (False, None)
    assert result.detail.startswith("ConnectError")


async def broken_gzip(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A server that says its body is gzip and sends something else."""
    headers = [(b"content-encoding", b"gzip"), (b"content-length", b"9")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"not gzip!"})


async def test_probe_turns_an_undecodable_answer_into_a_result(http):
    """httpx's DecodingError is no TransportError; it is still a failed check, not a crash mid-deploy."""
    async with serve_asgi(broken_gzip) as url:
        result = await probe(http, HealthCheck(url=f"{url}/health", timeout_s=1))
    assert (result.ok, result.status) == (False, None)
    assert result.detail.startswith("DecodingError")


async def test_probe_is_bounded_by_its_own_timeout(http, dokploy, vps, live):
    """A health endpoint that does not answer in time fails with 'no answer within'."""
    vps.vps.serve("/slow", service_id=live.id, variable="API_IMAGE", delay_s=5)
    result = await probe(http, check(vps, "/slow"), timeout_s=0.05)
    assert not result.ok
    assert result.detail == "no answer within 0.1s"


async def test_wait_healthy_waits_for_the_deployment_to_go_live(http, dokploy, vps):
    """503 while nothing is deployed, then 200 once the double's deployment is done: the wait returns ok."""
    compose = dokploy.double.add_compose(compose_id="later", env="API_IMAGE=api:2")
    vps.vps.serve("/api/health", service_id=compose.id, variable="API_IMAGE")
    dokploy.double.set_duration(compose.id, 0.1)
    async with http_client(base_url=dokploy.url, headers={"x-api-key": dokploy.api_key}) as raw:
        await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    result = await wait_healthy(http, check(vps, "/api/health", timeout_s=5), interval_s=INTERVAL)
    assert result.ok
    statuses = [status for _, path, status in vps.vps.requests if path == "/api/health"]
    assert statuses[0] == 503
    assert statuses[-1] == 200


async def test_wait_healthy_fails_with_url_wait_and_last_status(http, vps, live):
    """A check that never passes raises HealthCheckError with the URL, the time waited and the last result."""
    vps.vps.mark_bad("api:1")
    with pytest.raises(HealthCheckError) as caught:
        await wait_healthy(http, check(vps, "/api/health", timeout_s=0.1), interval_s=INTERVAL)
    error = caught.value
    assert error.url == f"{vps.url}/api/health"
    assert error.waited >= 0.1
    assert error.last == "HTTP 503 (expected 200)"
    assert str(error).startswith(f"health check {vps.url}/api/health did not pass after")
    assert len([p for _, p, _ in vps.vps.requests if p == "/api/health"]) >= 2


async def test_wait_healthy_uses_the_injected_clock(http, vps, live):
    """The deadline is measured on the injected clock: a clock already past it allows exactly one probe."""
    vps.vps.mark_bad("api:1")
    ticks = iter(range(0, 10_000, 100))
    with pytest.raises(HealthCheckError):
        await wait_healthy(
            http, check(vps, "/api/health", timeout_s=50), interval_s=INTERVAL, clock=lambda: next(ticks)
        )
    assert len(vps.vps.requests) == 1


async def test_wait_all_runs_checks_concurrently_and_all_must_pass(http, dokploy, vps, live):
    """Both checks are polled together; one failing fails the gate, naming it and the other failures."""
    other = dokploy.double.add_compose(compose_id="web", env="WEB_IMAGE=web:1", status="done")
    vps.vps.serve("/web/health", service_id=other.id, variable="WEB_IMAGE")
    checks = [check(vps, "/api/health"), check(vps, "/web/health")]
    assert [r.ok for r in await wait_all(http, checks, interval_s=INTERVAL)] == [True, True]
    vps.vps.mark_bad("web:1")
    with pytest.raises(HealthCheckError, match="/web/health"):
        await wait_all(http, checks, interval_s=INTERVAL)
    vps.vps.mark_bad("api:1")
    with pytest.raises(HealthCheckError, match=r"/api/health.*1 more check failed too: .*/web/health"):
        await wait_all(http, checks, interval_s=INTERVAL)


async def test_check_all_slow_check_does_not_delay_the_others(http, dokploy, vps, live):
    """A slow endpoint and a fast one are probed at the same time: the fast one is answered first."""
    vps.vps.serve("/slow", service_id=live.id, variable="API_IMAGE", delay_s=0.2)
    outcomes = await check_all(http, [check(vps, "/slow", timeout_s=2), check(vps, "/api/health")], interval_s=INTERVAL)
    assert [result.ok for result, _ in outcomes] == [True, True]
    assert [path for _, path, _ in vps.vps.requests] == ["/api/health", "/slow"]
