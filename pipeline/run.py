"""What every run shares: its credentials, options, clients and one summary.

``flows`` (publish, deploy, test), ``promote`` and ``prune`` all take the same
``Credentials`` and ``Options``, open the same clients, and end the same way:
one ``RunSummary`` (``summarize``), optionally posted to a webhook, rendered by
``finish`` for whoever called.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import httpx

from pipeline import junit
from pipeline import tags as tagging
from pipeline.config import Config, Environment
from pipeline.deploy import DEFAULT_DEPLOY_TIMEOUT_S, DEFAULT_POLL_INTERVAL_S, GroupResult, deploy_groups
from pipeline.dokploy import DokployClient
from pipeline.errors import MissingSecretError, PipelineError, UsageError
from pipeline.images import ImageResult
from pipeline.notify import notify
from pipeline.plan import Plan
from pipeline.progress import Progress, Span
from pipeline.registry import RegistryClient, is_loopback_host
from pipeline.secret import SecretValue
from pipeline.summary import Change, Health, RunSummary, ServiceOutcome, render_markdown, render_text, to_json

GITHUB_API_URL = "https://api.github.com"
# The deploy's own defaults, named here for the front doors' flags.
DEPLOY_TIMEOUT_S = DEFAULT_DEPLOY_TIMEOUT_S
POLL_INTERVAL_S = DEFAULT_POLL_INTERVAL_S

# Reads a service's test reports (an engine handle) into {path: XML text}.
ReportReader = Callable[[str, object], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The secrets a run may need; each is read once and never printed.

    ``variables`` names, for messages, the environment variable library mode reads each
    secret from (``registry_token``, ``dokploy_key``) when it is not the default one.
    """

    registry_user: str = ""
    registry_token: SecretValue | None = None
    dokploy_key: SecretValue | None = None
    notify_webhook: SecretValue | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, what in _SECRETS.items():
            secret: SecretValue | None = getattr(self, name)
            if secret is None:
                continue
            # A secret read from a file or pasted into a CI setting often ends in a newline. An HTTP
            # header cannot carry it, and the HTTP library's error would quote the whole value.
            value = secret.reveal().strip()
            if name != "notify_webhook" and any(not "!" <= c <= "~" for c in value):
                raise UsageError(
                    f"the {what} from {secret.name} contains a space, a control or a non-ASCII character, "
                    f"which an HTTP header cannot carry: check the value of {secret.name}"
                )
            if value != secret.reveal():
                object.__setattr__(self, name, SecretValue(secret.name, value) if value else None)

    def variable(self, name: str) -> str:
        """The environment variable library mode reads ``name`` (registry_token, dokploy_key) from."""
        return self.variables.get(name) or _DEFAULT_VARIABLES[name]


_SECRETS = {"registry_token": "registry token", "dokploy_key": "Dokploy API key", "notify_webhook": "webhook URL"}
_DEFAULT_VARIABLES = {"registry_token": "GITHUB_TOKEN", "dokploy_key": "DOKPLOY_API_KEY"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """How a run behaves; every field has the default a person expects."""

    dokploy_url: str = ""
    github_api_url: str = GITHUB_API_URL
    run_url: str = ""
    skip_build: bool = False
    force_build: bool = False
    skip_tests: bool = False
    dry_run: bool = False
    rollback: bool = True
    concurrency: int = 0
    fail_fast: bool = False
    poll_interval_s: float = POLL_INTERVAL_S
    deploy_timeout_s: float = DEPLOY_TIMEOUT_S

    def __post_init__(self) -> None:
        # A zero or negative poll interval polls Dokploy in a busy loop; NaN never times out.
        for flag, seconds in (("--poll-interval", self.poll_interval_s), ("--deploy-timeout", self.deploy_timeout_s)):
            if not (math.isfinite(seconds) and seconds > 0):
                raise UsageError(f"{flag} must be a positive number of seconds, got {seconds:g}")
        if self.concurrency < 0:
            raise UsageError(f"--concurrency must be 0 (every service at once) or more, got {self.concurrency}")


class RunFailedError(PipelineError):
    """The run finished with failures; the message is its whole summary."""


def http_client() -> httpx.AsyncClient:
    """The one HTTP client of a run, with explicit timeouts."""
    return httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=False)


def registry_client(http: httpx.AsyncClient, config: Config, credentials: Credentials) -> RegistryClient:
    """A client for the config's registry, with the credentials given (anonymous when none)."""
    return RegistryClient(
        http,
        registry=config.registry.host,
        username=credentials.registry_user or "pipeline",
        token=credentials.registry_token,
    )


def dokploy_client(
    http: httpx.AsyncClient, config: Config, credentials: Credentials, options: Options, *, purpose: str = "deploying"
) -> DokployClient:
    """A Dokploy client, or a message saying which URL or key is missing (and what ``purpose`` needs it)."""
    url = options.dokploy_url or config.dokploy_url
    if not url:
        raise UsageError(f"no Dokploy URL: set [dokploy] url in {config.file} or pass --dokploy-url")
    if credentials.dokploy_key is None:
        raise MissingSecretError(
            f"{purpose} needs the Dokploy API key: pass --dokploy-key=env://DOKPLOY_API_KEY "
            f"(library mode: set {credentials.variable('dokploy_key')})"
        )
    return DokployClient(http, base_url=url, api_key=credentials.dokploy_key)


def require_registry_token(config: Config, credentials: Credentials) -> None:
    """Publishing to a real registry needs a token; say which argument gives it."""
    if credentials.registry_token is None and not is_loopback_host(config.registry.host):
        raise MissingSecretError(
            f"publishing to {config.registry.host} needs a token: pass --registry-token=env://GITHUB_TOKEN "
            f"and --registry-user (library mode: set {credentials.variable('registry_token')})"
        )


def require_targets(plan: Plan) -> None:
    """Every group this run deploys has a target in the environment, checked before building."""
    missing = [g.name for g in plan.groups if g.target is None]
    if missing:
        raise UsageError(
            f"group{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'have' if len(missing) > 1 else 'has'} no Dokploy target for '{plan.environment}': add "
            f"[groups.targets.{plan.environment}] with compose_id or application_id to {plan.config.file}"
        )


async def check_deployable(
    config: Config,
    environment: str,
    pins: Mapping[str, str],
    *,
    client: DokployClient,
    http: httpx.AsyncClient,
    options: Options,
) -> None:
    """Read every target this run will deploy, writing nothing; raise what would stop the deploy.

    A wrong key, an unreachable Dokploy, an unknown id or a missing image variable
    is found here, before minutes of building or any tag moves, not after.
    """
    await deploy_groups(
        config,
        environment,
        pins,
        client=client,
        http=http,
        skip={},
        only=set(pins),
        rollback=False,
        dry_run=True,
        poll_interval_s=options.poll_interval_s,
        deploy_timeout_s=options.deploy_timeout_s,
    )


def finish(summary: RunSummary, summary_format: str) -> str:
    """The summary rendered as asked; a failed run raises with it, so the caller exits non-zero."""
    renderers = {"text": render_text, "markdown": render_markdown, "json": to_json}
    if summary_format not in renderers:
        raise UsageError(f"--summary-format must be text, markdown or json, got {summary_format!r}")
    rendered = renderers[summary_format](summary)
    if not summary.ok:
        raise RunFailedError(rendered)
    return rendered


class Clock:
    """When a run started, on the wall clock for people and a monotonic clock for durations."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start


def start_phase(progress: Progress | None, title: str) -> Span | None:
    """Start a progress phase line, when someone is watching."""
    return progress.phase(title) if progress is not None else None


def end_phase(phase: Span | None, failures: Sequence[str]) -> None:
    """End a phase from its results: these flows report failures as results, not exceptions."""
    if phase is not None:
        phase.end(PipelineError("; ".join(failures)) if failures else None)


def moving_tag(template: str, env: Environment) -> str:
    """A moving tag of ``env`` (``staging``, ``{branch}-latest``): its branch is the environment's own."""
    return tagging.render((template,), sha="", branch=env.branch, environment=env.name, dirty=False)[0]


def option_notes(options: Options) -> tuple[str, ...]:
    notes = []
    if options.dry_run:
        notes.append("dry run: nothing published or deployed")
    if options.skip_tests:
        notes.append("tests skipped by --skip-tests")
    if options.skip_build:
        notes.append("--skip-build: deployed images already published for this commit")
    if options.force_build:
        notes.append("--force-build: every service rebuilt")
    if not options.rollback:
        notes.append("--no-rollback: a failed group is left as it is")
    return tuple(notes)


def summarize(
    command: str,
    plan: Plan,
    images: Mapping[str, ImageResult],
    groups: Sequence[GroupResult],
    started: Clock,
    *,
    notes: Sequence[str] = (),
    run_url: str = "",
    change: Change | None = None,
    test_failures: Mapping[str, Sequence[str]] | None = None,
) -> RunSummary:
    """One row per service: its image result joined with its group's deploy result."""
    test_failures = test_failures or {}
    by_group = {g.group: g for g in groups}
    outcomes = []
    failures = []
    for service in plan.services:
        image = images.get(service.name)
        group = by_group.get(service.group)
        if image is not None and image.error is not None:
            failures.append(str(image.error))
        # The failing test cases go right under their service's error, in the summary's error list.
        failures += test_failures.get(service.name, [])
        outcomes.append(
            ServiceOutcome(
                service=service.name,
                group=service.group,
                change=_change(image, change),
                tags=image.tags if image else (),
                digest=image.digest if image else "",
                reference=image.reference if image else "",
                tests=image.tests if image else "none",
                deployment=group.deployment_id if group else "",
                deploy_status=group.status if group else "not deployed",
                health=_health(group),
                duration_s=(image.duration_s if image else 0.0) + (group.duration_s if group else 0.0),
                rolled_back=group.rolled_back if group else "-",
                error=str(image.error) if image and image.error else (group.error if group else ""),
            )
        )
    for group in groups:
        if group.error:
            failures.append(f"{group.group}: {group.error}")
        if group.rollback_error:
            failures.append(f"{group.group}: rollback failed: {group.rollback_error}")
    notes = [*plan.notes, *notes, *(image.note for image in images.values() if image.note)]
    return RunSummary(
        command=command,
        environment=plan.environment,
        branch=plan.git.branch,
        sha=plan.git.sha,
        ok=not failures,
        started_at=started.at,
        duration_s=started.elapsed(),
        outcomes=tuple(outcomes),
        notes=tuple(dict.fromkeys(notes)),
        run_url=run_url,
        failures=tuple(dict.fromkeys(failures)),
    )


async def test_failures(images: Mapping[str, ImageResult], read: ReportReader | None) -> dict[str, list[str]]:
    """Failed test cases from the JUnit reports of services whose tests failed."""
    found: dict[str, list[str]] = {}
    if read is None:
        return found
    for name, image in images.items():
        if image.reports is None or image.tests != "failed":
            continue
        # Reports explain a failure; reading them must never add one (a test may die before writing any).
        try:
            texts = await read(name, image.reports)
        except Exception as e:
            found[name] = [f"{name}: test reports could not be read ({type(e).__name__}: {str(e)[:200]})"]
            continue
        found[name] = junit.summarize(name, texts)
    return found


def _change(image: ImageResult | None, override: Change | None) -> Change:
    """The summary's word for what happened to an image."""
    if image is None:
        return "-"
    match image.change:
        case "failed":
            return "failed"
        case "cancelled":
            return "skipped"
        case "dry run":
            return "built"
        case "built" | "reused":
            return override or image.change


def _health(group: GroupResult | None) -> Health:
    if group is None or not group.health:
        return "not checked"
    return "passed" if all(h.ok for h in group.health) else "failed"


async def notify_if_asked(
    http: httpx.AsyncClient, config: Config, credentials: Credentials, summary: RunSummary
) -> RunSummary:
    """Post the summary when the config asks for this outcome; a failed post only adds a note."""
    event = "success" if summary.ok else "failure"
    if credentials.notify_webhook is None or event not in config.notify.on:
        return summary
    warning = await notify(http, credentials.notify_webhook, summary)
    return replace(summary, notes=(*summary.notes, warning)) if warning else summary
