"""Notifications against a real loopback webhook: the payload, and every way it can fail quietly."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from pipeline.notify import message, notify
from pipeline.secret import SecretValue
from pipeline.summary import RunSummary, ServiceOutcome
from tests.support.webhook import WebhookReceiver, serve_webhook

STARTED = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
RUN_URL = "https://github.com/bizoholic-digital/bizosaas/actions/runs/42"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with serve_webhook() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy from the environment must never see loopback test traffic.
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def outcome(service: str, **changes: object) -> ServiceOutcome:
    fields: dict[str, object] = {
        "service": service,
        "group": "backend",
        "change": "built",
        "tags": ("staging", "staging-abc1234"),
        "digest": "sha256:" + "a1" * 32,
        "reference": "ghcr.io/bizoholic-digital/bizosaas-x@sha256:" + "a1" * 32,
        "tests": "passed",
        "deployment": "dpl_1",
        "deploy_status": "done",
        "health": "passed",
        "duration_s": 96.0,
        "rolled_back": "no",
    }
    return ServiceOutcome(**(fields | changes))  # type: ignore[arg-type]


def summary(*outcomes: ServiceOutcome, ok: bool = True, failures: tuple[str, ...] = ()) -> RunSummary:
    return RunSummary(
        command="deploy",
        environment="staging",
        branch="staging",
        sha="abc1234f00d",
        ok=ok,
        started_at=STARTED,
        duration_s=184.0,
        outcomes=outcomes,
        notes=(),
        run_url=RUN_URL,
        failures=failures,
    )


def secret(url: str) -> SecretValue:
    return SecretValue("SLACK_WEBHOOK_URL", url)


def assert_no_url(warning: str | None, url: str) -> None:
    assert warning is not None
    assert url not in warning
    assert "s3cr3t-hook-token" not in warning
    assert "/services/" not in warning


async def test_posts_headline_services_and_run_url(receiver, http):
    """A successful post sends Slack's {"text": ...} with headline, one line per service and the run URL."""
    run = summary(
        outcome("brain-gateway"),
        outcome("bizoholic-frontend", group="frontend", change="reused", tests="skipped", duration_s=41),
    )
    assert await notify(http, secret(receiver.url), run) is None
    assert receiver.payloads() == [
        {
            "text": "deploy staging abc1234: OK (3m 04s)\n"
            "- brain-gateway: built, deploy done, health passed, 1m 36s\n"
            "- bizoholic-frontend: reused, deploy done, health passed, 41.0s\n"
            f"Run: {RUN_URL}"
        }
    ]


async def test_failure_message_shows_rollback_errors_and_escapes_slack_markup(receiver, http):
    """A failed run lists the rollback and the first line of each error, with <, > and & escaped."""
    run = summary(
        outcome("brain-gateway", health="failed", rolled_back="yes, healthy", duration_s=250),
        outcome(
            "client-portal",
            group="frontend",
            change="skipped",
            tags=(),
            deployment="",
            deploy_status="not deployed",
            health="not checked",
            rolled_back="-",
            duration_s=0,
        ),
        ok=False,
        failures=("brain-gateway: health check got <html> & gave up\nlog tail line",),
    )
    assert await notify(http, secret(receiver.url), run) is None
    assert receiver.payloads() == [
        {
            "text": "deploy staging abc1234: FAILED (3m 04s)\n"
            "- brain-gateway: built, deploy done, health failed, rolled back (healthy), 4m 10s\n"
            "- client-portal: skipped, 0.0s\n"
            "Errors:\n"
            "- brain-gateway: health check got &lt;html&gt; &amp; gave up\n"
            f"Run: {RUN_URL}"
        }
    ]


def test_message_for_prune_lists_retention_and_caps_errors():
    """Prune lines show what retention kept; more than five errors are counted, not listed."""
    pruned = outcome(
        "brain-gateway",
        change="-",
        tests="none",
        deploy_status="not deployed",
        health="not checked",
        rolled_back="-",
        retention="kept 10, deleting 3",
    )
    run = RunSummary(
        command="prune",
        environment="",
        branch="main",
        sha="",
        ok=False,
        started_at=STARTED,
        duration_s=3.0,
        outcomes=(pruned,),
        notes=(),
        failures=tuple(f"error {n}" for n in range(7)),
    )
    assert message(run) == (
        "prune: FAILED (3.0s)\n"
        "- brain-gateway: kept 10, deleting 3\n"
        "Errors:\n- error 0\n- error 1\n- error 2\n- error 3\n- error 4\n- and 2 more"
    )


async def test_url_never_reaches_the_logs(receiver, http, caplog):
    """Even at DEBUG, no log record (httpx logs every request URL) contains the webhook URL."""
    caplog.set_level(logging.DEBUG)
    assert await notify(http, secret(receiver.url), summary(outcome("brain-gateway"))) is None
    receiver.mode = "error"
    assert await notify(http, secret(receiver.url), summary(outcome("brain-gateway"))) is not None
    assert len(receiver.bodies) == 2
    assert "s3cr3t-hook-token" not in caplog.text
    assert not logging.getLogger("httpx").filters


async def test_no_webhook_sends_nothing(receiver, http):
    """Without a webhook configured, nothing is posted and there is no warning."""
    assert await notify(http, None, summary(outcome("brain-gateway"))) is None
    assert receiver.bodies == []


async def test_server_error_is_a_warning_without_the_url(receiver, http):
    """A 500 from the webhook gives a warning with the status and body, never the URL."""
    receiver.mode = "error"
    warning = await notify(http, secret(receiver.url), summary(outcome("brain-gateway")))
    assert warning == (
        "notification not sent: the notification webhook (from SLACK_WEBHOOK_URL) answered HTTP 500: no_service"
    )
    assert len(receiver.bodies) == 1
    assert_no_url(warning, receiver.url)


async def test_body_echoing_the_url_is_redacted(receiver, http):
    """A rejection whose body repeats the URL or its path has both replaced by ***."""
    receiver.mode = "echo"
    warning = await notify(http, secret(receiver.url), summary(outcome("brain-gateway")))
    assert warning == (
        "notification not sent: the notification webhook (from SLACK_WEBHOOK_URL) answered HTTP 404: "
        "no hook at *** (***)"
    )
    assert_no_url(warning, receiver.url)


async def test_hanging_webhook_times_out_with_a_warning(receiver, http):
    """A webhook that never answers is abandoned at the timeout with a warning, not an exception."""
    receiver.mode = "hang"
    warning = await notify(http, secret(receiver.url), summary(outcome("brain-gateway")), timeout_s=0.2)
    assert warning == (
        "notification not sent: the notification webhook (from SLACK_WEBHOOK_URL) did not answer within 0.2s"
    )
    assert_no_url(warning, receiver.url)


async def test_unreachable_webhook_is_a_warning(http):
    """A webhook whose port has nothing listening gives a warning, not an exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-hook-token"
    warning = await notify(http, secret(url), summary(outcome("brain-gateway")))
    assert warning == (
        "notification not sent: could not reach the notification webhook (from SLACK_WEBHOOK_URL) "
        "(ConnectError); is the URL right?"
    )
    assert_no_url(warning, url)


@pytest.mark.parametrize("url", ["s3cr3t-hook-token", "ftp://127.0.0.1/services/s3cr3t-hook-token", "http://"])
async def test_invalid_url_is_a_warning_without_the_value(http, url):
    """A secret that is not an http(s) URL gives a warning that does not repeat it."""
    warning = await notify(http, secret(url), summary(outcome("brain-gateway")))
    assert warning == (
        "notification not sent: the notification webhook (from SLACK_WEBHOOK_URL) is not a valid "
        "http(s) URL; check the secret's value"
    )
    assert_no_url(warning, url)
