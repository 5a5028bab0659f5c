"""What each environment runs right now, read from Dokploy and the health URLs.

Per environment and group: Dokploy's state of the target (``composeStatus`` or
``applicationStatus``), its last deployments, the image each service is pinned to
(the compose env's image variables, or the application's ``dockerImage``) and each
health check's current answer with its latency. Everything is read (GETs only) and
fetched concurrently. A target Dokploy cannot answer for (unknown id, no permission,
an outage) becomes an error row; a refused API key stops the whole report, since
every other row would say the same.

Only image variables are ever shown from a compose env: the rest of it holds the
services' own secrets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import anyio
import httpx

from pipeline import health
from pipeline.config import Config, DokployTarget, Group, HealthCheck
from pipeline.deployed import application_pins, compose_pins
from pipeline.dokploy import Deployment, DokployClient
from pipeline.errors import DokployAuthError, DokployError, UsageError
from pipeline.progress import format_duration

JSON_SCHEMA_VERSION = 1
DEFAULT_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentInfo:
    """One past deployment: when it started and how long it took (None while running or unknown)."""

    id: str
    status: str
    title: str
    started: str
    duration_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinnedImage:
    """The image a service runs as, as Dokploy has it ("" when not set)."""

    service: str
    variable: str
    image: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthInfo:
    """One health check's answer right now."""

    name: str
    url: str
    ok: bool
    status: int | None
    latency_s: float
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetStatus:
    """One group's target in one environment; ``error`` is set when Dokploy could not say."""

    environment: str
    group: str
    kind: str
    id: str
    name: str
    state: str
    deployments: tuple[DeploymentInfo, ...]
    images: tuple[PinnedImage, ...]
    health: tuple[HealthInfo, ...]
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """Every target of the chosen environments, in services.toml order."""

    dokploy_url: str
    environment: str
    targets: tuple[TargetStatus, ...]


async def collect_status(
    config: Config,
    *,
    environment: str = "",
    client: DokployClient,
    http: httpx.AsyncClient,
    deployments: int = 3,
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
) -> StatusReport:
    """Read every target of ``environment`` (all when empty) and probe its health checks."""
    if environment and environment not in config.environments:
        raise UsageError(
            f"unknown environment '{environment}'; {config.file} defines: {', '.join(config.environments)}"
        )
    names = [environment] if environment else list(config.environments)
    targets = [(env, group, group.targets[env]) for env in names for group in config.groups if env in group.targets]
    results: dict[int, TargetStatus] = {}
    refused: list[DokployAuthError] = []

    async def one(index: int, env: str, group: Group, target: DokployTarget) -> None:
        try:
            results[index] = await _target_status(
                config, env, group, target, client, http, deployments=deployments, probe_timeout_s=probe_timeout_s
            )
        except DokployAuthError as e:
            # Kept, not raised: raising here would surface as an ExceptionGroup.
            refused.append(e)

    async with anyio.create_task_group() as tg:
        for index, (env, group, target) in enumerate(targets):
            tg.start_soon(one, index, env, group, target)
    if refused:
        raise refused[0]
    return StatusReport(
        dokploy_url=client.base_url,
        environment=environment,
        targets=tuple(results[i] for i in range(len(targets))),
    )


async def _target_status(
    config: Config,
    env: str,
    group: Group,
    target: DokployTarget,
    client: DokployClient,
    http: httpx.AsyncClient,
    *,
    deployments: int,
    probe_timeout_s: float,
) -> TargetStatus:
    name = state = ""
    images: tuple[PinnedImage, ...] = ()
    rows: list[Deployment] = []
    checks: tuple[HealthInfo, ...] = ()

    failures: list[DokployError] = []

    async def read_target() -> None:
        nonlocal name, state, images
        try:
            if target.kind == "compose":
                compose = await client.compose(target.id)
                name, state = compose.name, compose.status
                pins = compose_pins(config, group, compose)
                images = tuple(
                    PinnedImage(service=s, variable=config.services[s].image_variable, image=ref)
                    for s, ref in pins.items()
                )
            else:
                application = await client.application(target.id)
                name, state = application.name, application.status
                pins = application_pins(group, application)
                images = tuple(PinnedImage(service=s, variable="", image=ref) for s, ref in pins.items())
        except DokployError as e:
            failures.append(e)

    async def read_deployments() -> None:
        nonlocal rows
        try:
            rows = (await client.deployments(target))[: max(deployments, 0)]
        except DokployError as e:
            failures.append(e)

    async def probe_all() -> None:
        nonlocal checks
        checks = await _probe_all(http, target.health, probe_timeout_s)

    # Errors are collected, not raised, so one failing read never cancels the others.
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_target)
        tg.start_soon(read_deployments)
        tg.start_soon(probe_all)
    refused = [e for e in failures if isinstance(e, DokployAuthError)]
    if refused:
        raise refused[0]
    error = str(failures[0]) if failures else ""
    return TargetStatus(
        environment=env,
        group=group.name,
        kind=target.kind,
        id=target.id,
        name=name,
        state=state,
        deployments=tuple(_deployment_info(row) for row in rows) if not error else (),
        images=images if not error else (),
        health=checks,
        error=error,
    )


async def _probe_all(
    http: httpx.AsyncClient, checks: Sequence[HealthCheck], timeout_s: float
) -> tuple[HealthInfo, ...]:
    results: dict[int, HealthInfo] = {}

    async def one(index: int, check: HealthCheck) -> None:
        result = await health.probe(http, check, timeout_s=min(timeout_s, check.timeout_s))
        results[index] = HealthInfo(
            name=check.label(),
            url=check.url,
            ok=result.ok,
            status=result.status,
            latency_s=result.latency_s,
            detail=result.describe() if not result.ok else f"HTTP {result.status}",
        )

    async with anyio.create_task_group() as tg:
        for index, check in enumerate(checks):
            tg.start_soon(one, index, check)
    return tuple(results[i] for i in range(len(checks)))


def _deployment_info(row: Deployment) -> DeploymentInfo:
    started = row.started_at or row.created_at
    duration = None
    if row.started_at and row.finished_at:
        duration = max(0.0, (_when(row.finished_at) - _when(row.started_at)).total_seconds())
    return DeploymentInfo(id=row.id, status=row.status, title=row.title, started=started, duration_s=duration)


def _when(iso: str) -> datetime:
    # Dokploy sends JavaScript ISO strings ("...T10:00:00.000Z"); 3.11 parses the Z.
    return datetime.fromisoformat(iso)


# ---- rendering -----------------------------------------------------------------------


def render_table(report: StatusReport) -> str:
    """One block per target: state, pinned images, last deployments and health."""
    scope = f"environment {report.environment}" if report.environment else "all environments"
    lines = [f"status of {scope} (Dokploy {report.dokploy_url})"]
    if not report.targets:
        lines += ["", "no Dokploy targets configured"]
    for t in report.targets:
        lines += ["", f"{t.environment}/{t.group}  {t.kind} {t.id}" + (f" '{t.name}'" if t.name else "")]
        if t.error:
            lines.append(f"  ERROR  {t.error}")
        else:
            lines.append(f"  state  {t.state or '-'}")
            lines += _block("images", [[i.service, i.image or f"(not set: {i.variable})"] for i in t.images])
            lines += _block(
                "deployments",
                [
                    [
                        d.id,
                        d.status,
                        d.started or "-",
                        format_duration(d.duration_s) if d.duration_s is not None else "-",
                    ]
                    for d in t.deployments
                ]
                or [["none yet"]],
            )
        lines += _block(
            "health",
            [
                # An unnamed check is labelled by its URL already: print it once.
                [
                    h.name,
                    "up" if h.ok else "DOWN",
                    h.detail,
                    f"{h.latency_s * 1000:.0f}ms",
                    "" if h.name == h.url else h.url,
                ]
                for h in t.health
            ]
            or [["no checks configured"]],
        )
    return "\n".join(lines) + "\n"


def _block(title: str, rows: list[list[str]]) -> list[str]:
    """An indented, column-aligned block under a title."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(len(r) for r in rows))]
    out = [f"  {title}"]
    out += ["    " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return out


def render_json(report: StatusReport) -> str:
    """The report as JSON with stable keys, for scripts."""
    data = {
        "schema": JSON_SCHEMA_VERSION,
        "dokploy_url": report.dokploy_url,
        "environment": report.environment or None,
        "targets": [
            {
                "environment": t.environment,
                "group": t.group,
                "kind": t.kind,
                "id": t.id,
                "name": t.name,
                "state": t.state or None,
                "error": t.error or None,
                "images": [
                    {"service": i.service, "variable": i.variable or None, "image": i.image or None} for i in t.images
                ],
                "deployments": [
                    {
                        "id": d.id,
                        "status": d.status,
                        "title": d.title,
                        "started": d.started or None,
                        "duration_s": round(d.duration_s, 3) if d.duration_s is not None else None,
                    }
                    for d in t.deployments
                ],
                "health": [
                    {
                        "name": h.name,
                        "url": h.url,
                        "ok": h.ok,
                        "status": h.status,
                        "latency_ms": round(h.latency_s * 1000, 1),
                        "detail": h.detail,
                    }
                    for h in t.health
                ],
            }
            for t in report.targets
        ],
    }
    return json.dumps(data, indent=2) + "\n"
