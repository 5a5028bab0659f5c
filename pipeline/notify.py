"""An optional chat message when a run ends.

It posts ``{"text": ...}`` to a Slack-compatible incoming webhook (Slack,
Mattermost, Rocket.Chat and Discord's ``/slack`` endpoint all accept it): the
headline, one line per service and the run URL.

Notifying is best effort. A deploy that worked must not fail because chat is down,
so ``notify`` never raises: it returns a warning to add to the summary. It tries
once: re-posting after a timeout could post the message twice. The webhook URL is
the credential itself, so it stays a ``SecretValue``: no warning contains it, and
httpx's own request log line for it is dropped (it would print the URL at INFO).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from pipeline.progress import format_duration, one_line
from pipeline.secret import SecretValue, redact
from pipeline.summary import RunSummary, ServiceOutcome

DEFAULT_TIMEOUT_S = 10.0
# Enough errors to see what broke without flooding the channel; the run log has the rest.
_MAX_ERRORS = 5
_BODY_EXCERPT = 120
# httpx logs every request's URL at INFO; for the webhook that line is dropped.
_HTTPX_LOGGER = logging.getLogger("httpx")


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions; these three are its only escapes.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _service_line(outcome: ServiceOutcome) -> str:
    if outcome.retention:
        return f"{outcome.service}: {outcome.retention}"
    parts: list[str] = [outcome.change]
    if outcome.deploy_status and outcome.deploy_status != "not deployed":
        parts.append(f"deploy {outcome.deploy_status}")
    if outcome.health != "not checked":
        parts.append(f"health {outcome.health}")
    if outcome.rolled_back.startswith("yes"):
        parts.append(f"rolled back ({outcome.rolled_back.removeprefix('yes, ')})")
    parts.append(format_duration(outcome.duration_s))
    return f"{outcome.service}: {', '.join(parts)}"


def message(summary: RunSummary) -> str:
    """The notification text: headline, one line per service, first errors, run URL."""
    lines = [f"{summary.headline} ({format_duration(summary.duration_s)})"]
    lines += [f"- {_service_line(o)}" for o in summary.outcomes]
    errors = summary.errors
    if errors:
        lines.append("Errors:")
        lines += [f"- {one_line((e.strip().splitlines() or [''])[0])}" for e in errors[:_MAX_ERRORS]]
        if len(errors) > _MAX_ERRORS:
            lines.append(f"- and {len(errors) - _MAX_ERRORS} more")
    if summary.run_url:
        lines.append(f"Run: {summary.run_url}")
    return _slack_escape("\n".join(lines))


async def notify(
    http: httpx.AsyncClient,
    webhook: SecretValue | None,
    summary: RunSummary,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str | None:
    """Post the summary to the webhook; return a warning if that failed, else None."""
    if webhook is None:
        return None
    where = f"the notification webhook (from {webhook.name})"
    hide = _HideWebhook(webhook)
    _HTTPX_LOGGER.addFilter(hide)
    try:
        response = await http.post(
            webhook.reveal(),
            json={"text": message(summary)},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return f"notification not sent: {where} did not answer within {timeout_s:g}s"
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        return f"notification not sent: {where} is not a valid http(s) URL; check the secret's value"
    except httpx.RequestError as error:
        return f"notification not sent: could not reach {where} ({type(error).__name__}); is the URL right?"
    except Exception as error:  # A failed notification must never fail the run.
        return f"notification not sent: {type(error).__name__} while posting to {where}"
    finally:
        _HTTPX_LOGGER.removeFilter(hide)
    if response.is_success:
        return None
    warning = f"notification not sent: {where} answered HTTP {response.status_code}"
    body = _redact_url(one_line(response.text), webhook)[:_BODY_EXCERPT]
    return f"{warning}: {body}" if body else warning


class _HideWebhook(logging.Filter):
    """Drops log records that mention the webhook's URL or its path."""

    def __init__(self, webhook: SecretValue) -> None:
        super().__init__()
        self._webhook = webhook

    def filter(self, record: logging.LogRecord) -> bool:
        return _redact_url(record.getMessage(), self._webhook) == record.getMessage()


def _redact_url(text: str, webhook: SecretValue) -> str:
    """Hide the webhook URL and, on its own, its path (where Slack keeps the token)."""
    path = urlsplit(webhook.reveal()).path
    return redact(text, webhook, SecretValue("webhook path", path) if len(path) > 1 else None)
