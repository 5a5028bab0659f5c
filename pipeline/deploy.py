"""Honest deploys: pin the new images, wait for Dokploy's own record, gate on health, roll back.

The old workflow POSTed ``compose.deploy``, slept, and called HTTP 200 a success.
But that call only queues a job: the answer carries no deployment id, and while
the job waits the service's ``composeStatus`` keeps its previous value (often
``done``), so polling it reports success before anything ran. Here a deployment
is found as the newest row of ``deployment.allByCompose`` that was not there
before the trigger, and only that row's ``done`` counts, followed by the group's
health checks. Groups deploy strictly in services.toml order; when one fails, the
previous image references are written back and redeployed, and nothing after it
is touched.

Images are pinned by editing only the service's image variable in the compose's
env (Dokploy writes it to ``.env`` next to the compose file) or, for a
docker-image application, its docker provider. No engine is needed here.
"""

from __future__ import annotations

import re
import secrets
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import anyio
import httpx

from pipeline import envfile
from pipeline.config import Config, DokployTarget, Group
from pipeline.dokploy import Application, Deployment, DokployClient
from pipeline.errors import (
    ConfigError,
    DeploymentError,
    DeploymentTimeoutError,
    DokployError,
    PipelineError,
    UsageError,
)
from pipeline.health import DEFAULT_INTERVAL_S, HealthResult, check_all, raise_for_failures
from pipeline.progress import format_duration
from pipeline.retry import Clock, pause

GroupStatus = Literal["done", "error", "cancelled", "timeout", "skipped", "dry run"]
RollbackOutcome = Literal["no", "yes, healthy", "yes, failed"]
EventSink = Callable[[str], None]
Progress = Callable[[Deployment | None], None]

# Dokploy builds can take minutes; a stuck one must still end the run.
DEFAULT_POLL_INTERVAL_S: Final = 3.0
DEFAULT_DEPLOY_TIMEOUT_S: Final = 900.0
LOG_TAIL_LINES: Final = 20

_REFERENCE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


# Enough for two API calls; a cancelled run must still end promptly.
_CANCEL_RESTORE_S = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupResult:
    """What happened to one group: its deployment, pins, health and any rollback."""

    group: str
    target: DokployTarget | None
    services: tuple[str, ...]
    status: GroupStatus
    deployment_id: str = ""
    pinned: Mapping[str, str] = field(default_factory=dict)
    previous: Mapping[str, str] = field(default_factory=dict)
    health: tuple[HealthResult, ...] = ()
    duration_s: float = 0.0
    rolled_back: RollbackOutcome = "no"
    error: str = ""
    rollback_error: str = ""

    @property
    def ok(self) -> bool:
        """Deployed and healthy (or, in a dry run, deployable)."""
        return self.status in ("done", "dry run") and not self.error


def check_reference(reference: str) -> str:
    """Why ``reference`` cannot be deployed as a pinned image, or "" when it can."""
    match = _REFERENCE.match(reference)
    if match is None:
        return f"{reference!r} is not an image reference like ghcr.io/owner/name@sha256:<64 hex>"
    if not match["digest"] and not match["tag"]:
        return f"{reference!r} has neither a tag nor a digest; pin name@sha256:<digest> or an immutable tag"
    if not match["digest"] and match["tag"] == "latest":
        return (
            f"{reference!r} uses the moving tag 'latest', which Dokploy does not re-pull; "
            "pin name@sha256:<digest> or an immutable tag"
        )
    return ""


# -- one deployment --------------------------------------------------------


async def deploy_and_wait(
    client: DokployClient,
    target: DokployTarget,
    *,
    title: str,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    timeout_s: float = DEFAULT_DEPLOY_TIMEOUT_S,
    clock: Clock = time.monotonic,
    description: str = "",
    on_progress: Progress | None = None,
) -> Deployment:
    """Trigger a deployment and wait for Dokploy's row of it to say ``done``.

    Raises DeploymentError (with the log tail) when the row ends in ``error`` or
    ``cancelled``, and DeploymentTimeoutError when ``timeout_s`` passes first.
    """
    baseline = {row.id for row in await client.deployments(target)}
    await client.trigger(target, title=title, description=description)
    deadline = clock() + timeout_s
    mine = ""
    seen: tuple[str, str] | bool | None = False  # False: nothing reported yet; None: reported as queued
    row: Deployment | None = None
    while True:
        fresh = [r for r in await client.deployments(target) if r.id not in baseline]
        row = _pick(fresh, mine, title)
        if row is not None and row.title == title:
            # Git sources rename the row to the commit message once built, so remember the id.
            mine = row.id
        state = None if row is None else (row.id, row.status)
        if on_progress is not None and state != seen:
            seen = state
            on_progress(row)
        if row is not None and row.finished and (row.id == mine or not await _ours_pending(client, target, title)):
            if row.status == "done":
                return row
            raise DeploymentError(target.describe(), row.id, row.status, await _log_tail(client, row))
        if clock() >= deadline:
            break
        await pause(poll_interval_s, deadline=deadline, clock=clock)
    if row is None and not await _queued(client, target):
        raise DeploymentTimeoutError(
            f"{target.describe()} deployment never started and is no longer in Dokploy's queue after "
            f"{_seconds(timeout_s)}s (Dokploy loses queued jobs when it restarts); deploy it again"
        )
    which = row.id if row is not None else "not started: still queued"
    status = row.status if row is not None else "queued"
    raise DeploymentTimeoutError(
        f"{target.describe()} deployment {which} still {status} after {_seconds(timeout_s)}s; "
        "Dokploy deployments can hang in 'running' (restart Dokploy or cancel it in the UI)"
    )


def _pick(fresh: Sequence[Deployment], mine: str, title: str) -> Deployment | None:
    """Our row among the new ones: the one we saw before, else ours by title, else the newest."""
    by_id = next((r for r in fresh if mine and r.id == mine), None)
    by_title = next((r for r in fresh if r.title == title), None)
    return by_id or by_title or (fresh[0] if fresh else None)


async def _ours_pending(client: DokployClient, target: DokployTarget, title: str) -> bool:
    """Whether our job is still in Dokploy's queue: then a finished row not ours by title is another's.

    "Active" counts too: the worker takes a job before it inserts the job's row, and
    in between the newest new row is someone else's.
    """
    try:
        jobs = await client.queue(target)
    except DokployError:
        return False  # queueList is missing before v0.28.3: trust the newest new row, as the docs advise
    if any(job.title for job in jobs):
        return any(job.title == title for job in jobs)
    return any(job.state == "waiting" for job in jobs)  # jobs without titles: any waiting one may be ours


async def _queued(client: DokployClient, target: DokployTarget) -> bool:
    """Whether Dokploy's queue holds any job for ``target`` (True when the queue cannot be read)."""
    try:
        return bool(await client.queue(target))
    except DokployError:
        return True


async def _log_tail(client: DokployClient, row: Deployment) -> str:
    """Dokploy's error message (usually null) and the last log lines, where the real reason is."""
    lines = [f"errorMessage: {row.error_message}"] if row.error_message else []
    if row.status == "cancelled":
        lines.append("(Dokploy cancels deployments that were running when it restarted)")
    try:
        logs = await client.read_logs(row.id, tail=LOG_TAIL_LINES)
    except DokployError as e:
        lines.append(f"(logs unavailable: {e})")
    else:
        lines.extend(logs.rstrip("\n").split("\n") if logs.strip() else [])
    return "\n".join(lines)


# -- groups ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """One group's part in this run, decided before anything is written."""

    group: Group
    target: DokployTarget | None
    selected: bool
    pins: Mapping[str, str]
    blocked: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    """The pin a group applies, with what it replaces."""

    pinned: Mapping[str, str]
    previous: Mapping[str, str]
    variables: Mapping[str, str]
    application: Application | None = None


async def deploy_groups(
    config: Config,
    environment: str,
    pins: Mapping[str, str],
    *,
    client: DokployClient,
    http: httpx.AsyncClient,
    skip: Mapping[str, str] | None = None,
    only: set[str] | None = None,
    rollback: bool = True,
    dry_run: bool = False,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    deploy_timeout_s: float = DEFAULT_DEPLOY_TIMEOUT_S,
    health_interval_s: float = DEFAULT_INTERVAL_S,
    on_event: EventSink | None = None,
    clock: Clock = time.monotonic,
) -> list[GroupResult]:
    """Deploy each group in order, each only after the previous one is done and healthy.

    ``pins`` maps each service to deploy to its pinned image reference; ``skip``
    maps services that have no image to the reason. Bad input and missing image
    variables raise before anything is written; deploy and health failures are
    reported in the results, after a rollback attempt.
    """
    emit = on_event or (lambda _: None)
    plans = _plan(config, environment, pins, skip or {}, only)

    # Read every target first, so a missing variable in a later group stops the run
    # before the first group is changed.
    changes: dict[str, _Change] = {}
    for plan in plans:
        if plan.blocked:
            break
        if plan.selected and plan.target is not None:
            changes[plan.group.name] = await _read_change(client, config, environment, plan)

    results: list[GroupResult] = []
    stopped = ""
    for plan in plans:
        group, target = plan.group, plan.target
        if not plan.selected:
            results.append(_skipped(plan, ""))  # not asked for: not a failure, so no error
            continue
        if stopped:
            results.append(_skipped(plan, f"not deployed: {stopped}, and groups deploy in order"))
            continue
        if plan.blocked:
            stopped = f"group '{group.name}' was not deployed ({plan.blocked})"
            emit(f"{group.name}: not deployed: {plan.blocked}")
            results.append(_skipped(plan, f"not deployed: {plan.blocked}"))
            continue
        assert target is not None  # _plan refuses selected groups without a target
        if dry_run:
            change = changes[group.name]
            for service, ref in change.pinned.items():
                emit(f"{group.name}: would set {change.variables[service]} {change.previous[service]} -> {ref}")
            results.append(
                GroupResult(
                    group=group.name,
                    target=target,
                    services=group.services,
                    status="dry run",
                    pinned=change.pinned,
                    previous=change.previous,
                )
            )
            continue
        result = await _deploy_group(
            client,
            http,
            config,
            environment,
            plan,
            target,
            rollback=rollback,
            poll_interval_s=poll_interval_s,
            deploy_timeout_s=deploy_timeout_s,
            health_interval_s=health_interval_s,
            emit=emit,
            clock=clock,
        )
        results.append(result)
        if not result.ok:
            stopped = f"group '{group.name}' failed ({result.status})"
    return results


def _plan(
    config: Config,
    environment: str,
    pins: Mapping[str, str],
    skip: Mapping[str, str],
    only: set[str] | None,
) -> list[_Plan]:
    """Check the run's inputs against services.toml and decide each group's part."""
    if environment not in config.environments:
        raise UsageError(
            f"unknown environment '{environment}'; {config.file} defines: {', '.join(config.environments)}"
        )
    for what, names in (("pinned", pins), ("skipped", skip), ("selected", only or ())):
        unknown = [name for name in names if name not in config.services]
        if unknown:
            raise UsageError(
                f"{what} service{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} not in {config.file}; "
                f"services: {', '.join(config.services)}"
            )
    for service, reference in pins.items():
        problem = check_reference(reference)
        if problem:
            raise UsageError(f"cannot deploy {service}: {problem}")
    plans = []
    for group in config.groups:
        chosen = [s for s in group.services if only is None or s in only]
        if only is not None and not chosen:
            plans.append(_Plan(group=group, target=None, selected=False, pins={}, blocked=""))
            continue
        key = f"groups.{group.name}.targets.{environment}"
        target = group.target(environment)
        if target is None:
            raise ConfigError(
                config.file,
                key,
                f"group '{group.name}' has no target for environment '{environment}': add "
                f"[groups.targets.{environment}] with the compose_id or application_id from Dokploy "
                "to that group, or leave its services out with --only",
            )
        if target.kind == "application" and len(group.services) != 1:
            raise ConfigError(
                config.file,
                key,
                f"an application target runs one image, but group '{group.name}' has "
                f"{len(group.services)} services; use a compose target or one group per service",
            )
        unpinned = [s for s in chosen if s not in pins and s not in skip]
        if unpinned:
            raise UsageError(
                f"no image given for {', '.join(unpinned)} (group '{group.name}'); pass the pinned reference "
                "of each service to deploy, or mark it skipped with the reason (e.g. its build failed)"
            )
        blocked = "; ".join(f"{s} has no image ({skip[s]})" for s in chosen if s in skip)
        plans.append(
            _Plan(
                group=group,
                target=target,
                selected=True,
                pins={s: pins[s] for s in chosen if s in pins and s not in skip},
                blocked=blocked,
            )
        )
    return plans


async def _read_change(client: DokployClient, config: Config, environment: str, plan: _Plan) -> _Change:
    """Read the target and work out the pin, refusing before any write when it cannot apply."""
    target = plan.target
    assert target is not None
    key = f"groups.{plan.group.name}.targets.{environment}"
    variables = {s: config.service(s).image_variable for s in plan.pins}
    if target.kind == "application":
        app = await client.application(target.id)
        if plan.pins and app.source_type != "docker":
            raise ConfigError(
                config.file,
                key,
                f"application {target.id} is built from source ({app.source_type}), so pinning an image would "
                "switch it to the Docker provider; set its provider to Docker in Dokploy, or use a compose target",
            )
        return _Change(
            pinned=dict(plan.pins),
            previous=dict.fromkeys(plan.pins, app.docker_image),
            variables=dict.fromkeys(plan.pins, "dockerImage"),
            application=app,
        )
    compose = await client.compose(target.id)
    current = envfile.values(compose.env)
    missing = [s for s, v in variables.items() if v not in current]
    if missing:
        raise ConfigError(
            config.file,
            key,
            "; ".join(
                f"compose {target.id} has no {variables[s]} in its environment: add "
                f"{variables[s]}={config.image(s)}:<tag> in Dokploy and use ${{{variables[s]}}} as the image "
                "in the compose file"
                for s in missing
            ),
        )
    if compose.source_type == "raw":
        unused = [v for v in variables.values() if not _uses_variable(compose.compose_file, v)]
        if unused:
            raise ConfigError(
                config.file,
                key,
                f"the compose file of compose {target.id} never uses "
                f"{', '.join('${' + v + '}' for v in unused)}, so pinning would change nothing; "
                "use it as the service's image",
            )
    return _Change(
        pinned=dict(plan.pins),
        previous={s: current[v] for s, v in variables.items()},
        variables=variables,
    )


def _uses_variable(compose_file: str, variable: str) -> bool:
    return re.search(rf"\$\{{{variable}(?:[:?-][^}}]*)?\}}|\${variable}\b", compose_file) is not None


async def _write(client: DokployClient, target: DokployTarget, change: _Change, values: Mapping[str, str]) -> None:
    """Set the services' images to ``values`` (service -> reference) on the target."""
    if target.kind == "compose":
        env = (await client.compose(target.id)).env
        wanted = {change.variables[s]: ref for s, ref in values.items()}
        try:
            new = envfile.replace(env, wanted)
        except KeyError as e:
            raise PipelineError(
                f"compose {target.id} no longer has {e.args[0]} in its environment (removed while deploying?); "
                f"set {', '.join(f'{k}={v}' for k, v in wanted.items())} in Dokploy by hand"
            ) from None
        if new != env:
            await client.save_compose_env(target.id, new)
        return
    app = change.application
    assert app is not None
    for ref in values.values():
        await client.save_docker_provider(
            target.id, image=ref, registry_url=app.registry_url, username=app.username, password=app.password
        )


async def _deploy_group(
    client: DokployClient,
    http: httpx.AsyncClient,
    config: Config,
    environment: str,
    plan: _Plan,
    target: DokployTarget,
    *,
    rollback: bool,
    poll_interval_s: float,
    deploy_timeout_s: float,
    health_interval_s: float,
    emit: EventSink,
    clock: Clock,
) -> GroupResult:
    """Pin, deploy, wait and health-check one group; on failure, roll back and say how that went."""
    name = plan.group.name
    started = clock()
    # Read again: an earlier group may share this target, or someone may have edited the env.
    try:
        change = await _read_change(client, config, environment, plan)
    except PipelineError as e:
        emit(f"{name}: not deployed: {e}")
        return GroupResult(
            group=name,
            target=target,
            services=plan.group.services,
            status="error",
            pinned=plan.pins,
            duration_s=clock() - started,
            error=f"not deployed, nothing was changed: {e}",
        )
    deployment_id = ""
    health: tuple[HealthResult, ...] = ()
    stage = "write"

    def progress(row: Deployment | None) -> None:
        nonlocal deployment_id
        if row is None:
            emit(f"{name}: {target.describe()}: deployment queued")
        else:
            deployment_id = row.id
            emit(f"{name}: {target.describe()}: deployment {row.id} {row.status}")

    try:
        for service, ref in change.pinned.items():
            emit(f"{name}: {target.describe()}: {change.variables[service]} {change.previous[service]} -> {ref}")
        await _write(client, target, change, change.pinned)
        stage = "deploy"
        description = ", ".join(f"{s}={ref}" for s, ref in change.pinned.items())
        await deploy_and_wait(
            client,
            target,
            title=_title("deploy", environment, name),
            description=description,
            poll_interval_s=poll_interval_s,
            timeout_s=deploy_timeout_s,
            clock=clock,
            on_progress=progress,
        )
        stage = "health"
        outcomes = await check_all(http, target.health, interval_s=health_interval_s, clock=clock)
        health = tuple(result for result, _ in outcomes)
        raise_for_failures(outcomes)
        emit(
            f"{name}: deployed and healthy ({len(health)} check{'s' if len(health) != 1 else ''}) "
            f"in {format_duration(clock() - started)}"
        )
        return GroupResult(
            group=name,
            target=target,
            services=plan.group.services,
            status="done",
            deployment_id=deployment_id,
            pinned=change.pinned,
            previous=change.previous,
            health=health,
            duration_s=clock() - started,
        )
    except anyio.get_cancelled_exc_class():
        # The run was cancelled (a cancelled Actions job, Ctrl-C) after the env may have changed:
        # put the previous images back, shielded and briefly, so nothing is left half-deployed.
        if rollback:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_RESTORE_S):
                await _restore_after_cancel(client, environment, name, target, change, stage=stage, emit=emit)
        raise
    except Exception as raised:  # whatever failed, the group is rolled back, never left half-done.
        failure = _unwrapped(raised)
        status: GroupStatus = "error"
        if isinstance(failure, DeploymentError) and failure.status == "cancelled":
            status = "cancelled"
        elif isinstance(failure, DeploymentTimeoutError):
            status = "timeout"
        reason = _reason(failure)
        error = f"deployment {deployment_id} is done, but {reason}" if stage == "health" else reason
        emit(f"{name}: failed after {format_duration(clock() - started)}: {error}")
        outcome: RollbackOutcome = "no"
        rollback_error = ""
        if rollback:
            outcome, rollback_error = await _roll_back(
                client,
                http,
                environment,
                name,
                target,
                change,
                redeploy=stage != "write",
                queue_blocked=isinstance(failure, DeploymentTimeoutError),
                poll_interval_s=poll_interval_s,
                deploy_timeout_s=deploy_timeout_s,
                health_interval_s=health_interval_s,
                emit=emit,
                clock=clock,
            )
        else:
            error += f"; not rolled back (rollback disabled): {target.describe()} keeps the new images"
        return GroupResult(
            group=name,
            target=target,
            services=plan.group.services,
            status=status,
            deployment_id=deployment_id,
            pinned=change.pinned,
            previous=change.previous,
            health=health,
            duration_s=clock() - started,
            rolled_back=outcome,
            error=error,
            rollback_error=rollback_error,
        )


async def _roll_back(
    client: DokployClient,
    http: httpx.AsyncClient,
    environment: str,
    name: str,
    target: DokployTarget,
    change: _Change,
    *,
    redeploy: bool,
    queue_blocked: bool,
    poll_interval_s: float,
    deploy_timeout_s: float,
    health_interval_s: float,
    emit: EventSink,
    clock: Clock,
) -> tuple[RollbackOutcome, str]:
    """Write the previous references back, redeploy, and re-check health."""
    emit(f"{name}: rolling back {target.describe()} to {', '.join(change.previous.values()) or 'its state'}")
    try:
        await _write(client, target, change, change.previous)
        if redeploy and queue_blocked:
            # Our deployment is stuck or still queued, and Dokploy runs one job at a time:
            # a rollback deployment would wait behind it for another full timeout. Queue it
            # without waiting; any job that starts from now on reads the restored env.
            await client.trigger(target, title=_title("rollback", environment, name))
            message = (
                f"the previous images are back in {target.describe()}'s settings and a rollback deployment "
                "is queued, but Dokploy's queue is blocked by the deployment that timed out: restart Dokploy "
                f"(or cancel that deployment), then deploy {target.describe()} again if the rollback job was lost"
            )
            emit(f"{name}: rollback not verified: {message}")
            return "yes, failed", message
        if redeploy:
            await deploy_and_wait(
                client,
                target,
                title=_title("rollback", environment, name),
                description=", ".join(f"{s}={ref}" for s, ref in change.previous.items()),
                poll_interval_s=poll_interval_s,
                timeout_s=deploy_timeout_s,
                clock=clock,
            )
        raise_for_failures(await check_all(http, target.health, interval_s=health_interval_s, clock=clock))
    except Exception as e:  # a failed rollback is reported, not raised over the deploy's failure.
        emit(f"{name}: rollback failed: {_reason(e)}")
        return "yes, failed", _reason(e)
    emit(f"{name}: rolled back, healthy")
    return "yes, healthy", ""


async def _restore_after_cancel(
    client: DokployClient,
    environment: str,
    name: str,
    target: DokployTarget,
    change: _Change,
    *,
    stage: str,
    emit: EventSink,
) -> None:
    """Write the previous references back and, if a deployment was started, queue one that uses them."""
    try:
        await _write(client, target, change, change.previous)
        if stage != "write":
            await client.trigger(target, title=_title("rollback", environment, name))
        emit(f"{name}: cancelled: the previous images are back in {target.describe()}'s settings")
    except Exception as e:  # the cancellation goes on; what could not be restored is said.
        emit(f"{name}: cancelled, and the previous images could not be restored: {_reason(e)}")


def _skipped(plan: _Plan, reason: str) -> GroupResult:
    return GroupResult(
        group=plan.group.name,
        target=plan.target,
        services=plan.group.services,
        status="skipped",
        pinned=plan.pins,
        error=reason,
    )


def _unwrapped(error: Exception) -> Exception:
    """The one error inside single-error ExceptionGroups, as a task group raises it."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _reason(error: Exception) -> str:
    """A failure in one line. Our errors explain themselves; anything else is a bug or a surprise,
    named with where it was raised, since no traceback follows it into the summary."""
    error = _unwrapped(error)
    if isinstance(error, PipelineError):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = f": {error}" if str(error) else ""
    return f"unexpected {type(error).__name__}{text}{where}"


def _title(action: str, environment: str, group: str) -> str:
    """A deployment title unique to this call, so the row can be told apart from others."""
    return f"pipeline {action} {environment}/{group} #{secrets.token_hex(3)}"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
