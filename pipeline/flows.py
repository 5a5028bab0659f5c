"""The runs a person asks for: publish, deploy, promote, prune, test.

Each flow takes a plan (or the config), credentials as ``SecretValue`` and
options, does its work through the engine-free pieces (``images``, ``deploy``,
``registry``, ``retention``) and returns one ``RunSummary``. The Dagger module
(``main.py``) and the library-mode CLI (``cli.py``) both call these, so a run on
a laptop and a run in Actions are the same code.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline import config as config_module
from pipeline import junit
from pipeline import tags as tagging
from pipeline.composefile import parse_env
from pipeline.config import Config, Environment
from pipeline.deploy import GroupResult, deploy_groups
from pipeline.doctor import DoctorReport, run_doctor
from pipeline.doctor import render as render_checks
from pipeline.dokploy import DokployClient
from pipeline.errors import (
    ManifestNotFoundError,
    MissingSecretError,
    PipelineError,
    RetentionError,
    UsageError,
)
from pipeline.images import ImageEngine, ImageResult, produce
from pipeline.notify import notify
from pipeline.packages import GitHubPackages
from pipeline.plan import Plan, ServicePlan
from pipeline.progress import Progress, Span
from pipeline.registry import RegistryClient, is_loopback_host
from pipeline.retention import RetentionPlan, apply_plan, collect_children, plan_retention, short
from pipeline.secret import SecretValue
from pipeline.status import collect_status
from pipeline.status import render_json as render_status_json
from pipeline.status import render_table as render_status_table
from pipeline.summary import Change, Health, RunSummary, ServiceOutcome, render_markdown, render_text, to_json

GITHUB_API_URL = "https://api.github.com"
# Dokploy builds can take minutes; a stuck one must still end the run.
DEPLOY_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 3.0

# Reads a service's test reports (an engine handle) into {path: XML text}.
ReportReader = Callable[[str, object], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The secrets a run may need; each is read once and never printed."""

    registry_user: str = ""
    registry_token: SecretValue | None = None
    dokploy_key: SecretValue | None = None
    notify_webhook: SecretValue | None = None


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
    http: httpx.AsyncClient, config: Config, credentials: Credentials, options: Options
) -> DokployClient:
    """A Dokploy client, or a message saying which URL or key is missing."""
    url = options.dokploy_url or config.dokploy_url
    if not url:
        raise UsageError(f"no Dokploy URL: set [dokploy] url in {config.file} or pass --dokploy-url")
    if credentials.dokploy_key is None:
        raise MissingSecretError(
            "deploying needs the Dokploy API key: pass --dokploy-key=env://DOKPLOY_API_KEY "
            "(library mode: set DOKPLOY_API_KEY)"
        )
    return DokployClient(http, base_url=url, api_key=credentials.dokploy_key)


def require_registry_token(config: Config, credentials: Credentials) -> None:
    """Publishing to a real registry needs a token; say which argument gives it."""
    if credentials.registry_token is None and not is_loopback_host(config.registry.host):
        raise MissingSecretError(
            f"publishing to {config.registry.host} needs a token: pass --registry-token=env://GITHUB_TOKEN "
            "and --registry-user (library mode: set GITHUB_TOKEN)"
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


async def run_tests(
    plan: Plan, *, engine: ImageEngine[Any], reports: ReportReader | None = None, progress: Progress | None = None
) -> RunSummary:
    """Build each planned service and run its tests and smoke check; publish nothing."""
    started = _Clock()
    images = await produce(
        plan.services,
        engine=engine,
        registry=None,
        concurrency=None,
        fail_fast=False,
        force_build=True,
        dry_run=True,
        progress=progress,
    )
    return _summary(
        "test",
        plan,
        images,
        [],
        started,
        notes=("test run: nothing published",),
        test_failures=await _test_failures(images, reports),
    )


async def publish(
    plan: Plan,
    *,
    engine: ImageEngine[Any],
    credentials: Credentials,
    options: Options,
    reports: ReportReader | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Reuse or build, test and publish every planned service; deploy nothing."""
    started = _Clock()
    if not options.dry_run:
        require_registry_token(plan.config, credentials)
    async with http_client() as http:
        images = await _images(plan, engine, registry_client(http, plan.config, credentials), options, progress)
    return _summary(
        "publish",
        plan,
        images,
        [],
        started,
        notes=_notes(options),
        run_url=options.run_url,
        test_failures=await _test_failures(images, reports),
    )


async def deploy(
    plan: Plan,
    *,
    engine: ImageEngine[Any] | None,
    credentials: Credentials,
    options: Options,
    reports: ReportReader | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Publish what changed, then deploy each group in order, gated on Dokploy's record and health."""
    started = _Clock()
    require_targets(plan)
    if not options.dry_run and not options.skip_build:
        require_registry_token(plan.config, credentials)
    async with http_client() as http:
        dokploy = dokploy_client(http, plan.config, credentials, options)
        registry = registry_client(http, plan.config, credentials)
        if options.skip_build:
            images = await published_images(plan, registry)
        else:
            if engine is None:
                raise UsageError(
                    "building needs a Dagger engine: run through `dagger call deploy`, or pass --skip-build"
                )
            phase = _phase(progress, "build, test and publish")
            images = await _images(plan, engine, registry, options, progress)
            _end(phase, [f"{name}: {r.step} failed" for name, r in images.items() if r.error is not None])
        pins = {name: r.reference for name, r in images.items() if r.reference}
        skip = {name: f"{r.step or 'build'} failed" for name, r in images.items() if not r.reference}
        if options.dry_run:
            # Nothing was published, so each group is checked against its current images.
            pins, skip = {name: f"{s.image}:{_immutable_tag(plan, s)}" for name, s in _by_name(plan).items()}, {}
        phase = _phase(progress, f"deploy {plan.environment}: {', '.join(g.name for g in plan.groups)}")
        groups = await deploy_groups(
            plan.config,
            plan.environment,
            pins,
            client=dokploy,
            http=http,
            skip=skip,
            only={s.name for s in plan.services},
            rollback=options.rollback,
            dry_run=options.dry_run,
            poll_interval_s=options.poll_interval_s,
            deploy_timeout_s=options.deploy_timeout_s,
            on_event=progress.note if progress else None,
        )
        _end(phase, [f"{g.group}: {g.status}" for g in groups if not g.ok and g.status != "skipped"])
        summary = _summary(
            "deploy",
            plan,
            images,
            groups,
            started,
            notes=_notes(options),
            run_url=options.run_url,
            test_failures=await _test_failures(images, reports),
        )
        summary = await _notify(http, plan.config, credentials, summary)
    return summary


async def published_images(plan: Plan, registry: RegistryClient) -> dict[str, ImageResult]:
    """For --skip-build: the images this commit already published, pinned by digest."""
    results: dict[str, ImageResult] = {}
    for service in plan.services:
        tag = _immutable_tag(plan, service)
        try:
            found = await registry.resolve(service.repository, tag)
        except ManifestNotFoundError:
            raise UsageError(
                f"{service.name}: {service.image}:{tag} is not in the registry; "
                "publish it first, or run without --skip-build"
            ) from None
        results[service.name] = ImageResult(
            service=service.name,
            change="reused",
            digest=found.digest,
            reference=tagging.pinned(service.image, found.digest),
            tags=(tag,),
        )
    return results


async def promote(
    config: Config,
    *,
    source_env: str,
    target_env: str,
    services: Sequence[str] | None,
    credentials: Credentials,
    options: Options,
    deploy: bool = True,
    progress: Progress | None = None,
) -> RunSummary:
    """Copy the digests ``source_env`` runs onto ``target_env``'s tags, verified, then deploy them."""
    from pipeline.plan import select_services  # noqa: PLC0415 - plan imports nothing from here.

    started = _Clock()
    for name in (source_env, target_env):
        if name not in config.environments:
            raise UsageError(
                f"unknown environment '{name}'; defined in {config.file}: {', '.join(config.environments)}"
            )
    if source_env == target_env:
        raise UsageError("--from and --to name the same environment")
    source, target = config.environments[source_env], config.environments[target_env]
    moving = [t for t in source.tags if tagging.is_moving(t)]
    if not moving:
        raise UsageError(f"environment '{source_env}' has no moving tag (like \"staging\") to promote from")
    source_tag = _render_moving(moving[0], source)
    selected = select_services(config, services)
    async with http_client() as http:
        registry = registry_client(http, config, credentials)
        # Check and resolve everything first: nothing moves unless every image can be promoted.
        digests: dict[str, str] = {}
        revisions: dict[str, str] = {}
        for name in selected:
            repository = config.repository(name)
            try:
                digests[name] = (await registry.resolve(repository, source_tag)).digest
            except ManifestNotFoundError:
                raise UsageError(
                    f"cannot promote {name}: {config.image(name)}:{source_tag} does not exist; "
                    f"deploy {source_env} first"
                ) from None
            revisions[name] = await registry.revision(repository, digests[name])
            if revisions[name].endswith("-dirty"):
                raise UsageError(
                    f"cannot promote {name}: {config.image(name)}:{source_tag} was built from uncommitted "
                    f"changes ({revisions[name]}); deploy a committed build to {source_env} first"
                )
        plan = _promotion_plan(config, target_env, selected, revisions)
        dokploy = None
        if deploy:
            require_targets(plan)
            dokploy = dokploy_client(http, config, credentials, options)
        images: dict[str, ImageResult] = {}
        for name in selected:
            new_tags = tagging.render(
                target.tags, sha=revisions[name], branch=target.branch, environment=target_env, dirty=False
            )
            digest = await registry.copy_tag(config.repository(name), digests[name], new_tags)
            images[name] = ImageResult(
                service=name,
                change="reused",
                digest=digest,
                reference=tagging.pinned(config.image(name), digest),
                tags=tuple(new_tags),
                note=f"promoted from {source_env}",
            )
        groups: list[GroupResult] = []
        if dokploy is not None:
            groups = await deploy_groups(
                config,
                target_env,
                {n: r.reference for n, r in images.items()},
                client=dokploy,
                http=http,
                skip={},
                only=set(selected),
                rollback=options.rollback,
                dry_run=False,
                poll_interval_s=options.poll_interval_s,
                deploy_timeout_s=options.deploy_timeout_s,
                on_event=progress.note if progress else None,
            )
        summary = _summary(
            "promote",
            plan,
            images,
            groups,
            started,
            notes=(f"promoted {source_env} -> {target_env} by digest: nothing rebuilt",),
            run_url=options.run_url,
            change="promoted",
        )
        summary = await _notify(http, config, credentials, summary)
    return summary


async def prune(
    config: Config,
    *,
    keep: int,
    apply: bool,
    owner_type: str,
    credentials: Credentials,
    options: Options,
) -> RunSummary:
    """Keep the newest ``keep`` versions per image and everything in use; delete the rest with --apply."""
    started = _Clock()
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, got {keep}")
    if owner_type not in ("org", "user"):
        raise UsageError(f"--owner-type must be 'org' or 'user', got {owner_type!r}")
    token = credentials.registry_token
    if token is None:
        raise MissingSecretError(
            "prune needs a GitHub token with read:packages and delete:packages: "
            "pass --github-token=env://GITHUB_TOKEN (library mode: set GITHUB_TOKEN)"
        )
    protected_tags = _moving_tags(config)
    async with http_client() as http:
        deployed, note = await _deployed_digests(http, config, credentials, options)
        if note and apply:
            raise RetentionError(f"refusing to delete anything: {note}")
        packages = GitHubPackages(
            http,
            token=token,
            owner=config.registry.namespace,
            owner_type=owner_type,  # type: ignore[arg-type]
            api_url=options.github_api_url,
        )
        registry = registry_client(http, config, credentials)
        # Plan every image before deleting anything: a manifest that cannot be read in the
        # last image must stop the run before the first image loses a version.
        plans: list[tuple[str, RetentionPlan]] = []
        for name in config.services:
            package = f"{config.registry.image_prefix}{name}"
            versions = await packages.list_versions(package)
            children = await collect_children(registry, config.repository(name), versions)
            plans.append(
                (
                    name,
                    plan_retention(
                        package,
                        versions,
                        keep=keep,
                        protected_tags=protected_tags,
                        protected_digests=deployed,
                        children_of=children,
                    ),
                )
            )
        outcomes = []
        failures = []
        for name, plan in plans:
            deleted = ""
            if apply:
                results = await apply_plan(packages, plan)
                bad = [r for r in results if r.outcome not in ("deleted", "already gone")]
                failures += [f"{name}: version {r.version.id}: {r.detail}" for r in bad]
                deleted = f", deleted {len(results) - len(bad)}"
            outcomes.append(
                ServiceOutcome(
                    service=name,
                    group=config.group_of(name).name,
                    change="-",
                    tags=(),
                    digest="",
                    reference="",
                    tests="none",
                    deployment="",
                    deploy_status="-",
                    health="not checked",
                    duration_s=0.0,
                    rolled_back="-",
                    retention=f"kept {len(plan.keep)}, {'deleting' if apply else 'would delete'} "
                    f"{len(plan.delete)}{deleted}",
                    error="; ".join(f for f in failures if f.startswith(f"{name}:")),
                )
            )
    notes = [f"kept the newest {keep} per image, moving tags {', '.join(sorted(protected_tags))} and deployed pins"]
    notes.append("applied" if apply else "dry run: nothing deleted (pass --apply to delete)")
    if note:
        notes.append(note)
    # Which versions go, by digest, so a dry run can be checked before --apply deletes them.
    notes += [
        f"{plan.package}: {'deleting' if apply else 'would delete'} "
        + ", ".join(
            f"{short(d.version.digest)} ({','.join(d.version.tags) or 'untagged'}; {d.reason})" for d in plan.delete
        )
        for _, plan in plans
        if plan.delete
    ]
    return RunSummary(
        command="prune",
        environment="all",
        branch="",
        sha="",
        ok=not failures,
        started_at=started.at,
        duration_s=started.elapsed(),
        outcomes=tuple(outcomes),
        notes=tuple(notes),
        run_url=options.run_url,
        failures=tuple(failures),
    )


async def doctor(
    source: Path, *, config_path: Path, environment: str, credentials: Credentials, options: Options
) -> DoctorReport:
    """Every pre-flight check; a missing credential fails its own checks, never the others."""
    async with http_client() as http:
        config: Config | None
        try:
            config = config_module.load(config_path)
        except PipelineError:
            config = None  # run_doctor reports the config error as its first row.
        registry = (
            registry_client(http, config, credentials)
            if config is not None and credentials.registry_token is not None
            else None
        )
        dokploy = None
        url = options.dokploy_url or (config.dokploy_url if config else "")
        if config is not None and credentials.dokploy_key is not None and url:
            dokploy = dokploy_client(http, config, credentials, options)
        return await run_doctor(
            config_path,
            source=source,
            environment=environment,
            registry=registry,
            dokploy=dokploy,
            http=http,
            dokploy_url=options.dokploy_url,
        )


def render_doctor(report: DoctorReport) -> str:
    """The doctor's table, with the fix for each failure."""
    return render_checks(report)


def finish_doctor(report: DoctorReport) -> str:
    """The doctor's table; raises with it when a check failed, so the caller exits non-zero."""
    rendered = render_checks(report)
    if not report.ok:
        raise RunFailedError(rendered)
    return rendered


async def status(config: Config, *, environment: str, credentials: Credentials, options: Options, output: str) -> str:
    """What each environment runs now, as a table or JSON."""
    if output not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {output!r}")
    async with http_client() as http:
        report = await collect_status(
            config, environment=environment, client=dokploy_client(http, config, credentials, options), http=http
        )
    return render_status_json(report) if output == "json" else render_status_table(report)


def finish(summary: RunSummary, summary_format: str) -> str:
    """The summary rendered as asked; a failed run raises with it, so the caller exits non-zero."""
    renderers = {"text": render_text, "markdown": render_markdown, "json": to_json}
    if summary_format not in renderers:
        raise UsageError(f"--summary-format must be text, markdown or json, got {summary_format!r}")
    rendered = renderers[summary_format](summary)
    if not summary.ok:
        raise RunFailedError(rendered)
    return rendered


# -- helpers -------------------------------------------------------------------


class _Clock:
    """When a run started, on the wall clock for people and a monotonic clock for durations."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start


async def _images(
    plan: Plan, engine: ImageEngine[Any], registry: RegistryClient, options: Options, progress: Progress | None
) -> dict[str, ImageResult]:
    return await produce(
        plan.services,
        engine=engine,
        registry=registry,
        concurrency=options.concurrency or None,
        fail_fast=options.fail_fast,
        force_build=options.force_build,
        skip_tests=options.skip_tests,
        dry_run=options.dry_run,
        progress=progress,
    )


def _phase(progress: Progress | None, title: str) -> Span | None:
    """Start a progress phase line, when someone is watching."""
    return progress.phase(title) if progress is not None else None


def _end(phase: Span | None, failures: Sequence[str]) -> None:
    """End a phase from its results: these flows report failures as results, not exceptions."""
    if phase is not None:
        phase.end(PipelineError("; ".join(failures)) if failures else None)


def _by_name(plan: Plan) -> dict[str, ServicePlan]:
    return {s.name: s for s in plan.services}


def _immutable_tag(plan: Plan, service: ServicePlan) -> str:
    """The tag of this commit that never moves: the first rendered from a template with {sha}."""
    env = plan.config.environments[plan.environment]
    for template in env.tags:
        if not tagging.is_moving(template):
            # One template at a time: render() drops duplicates, which would shift a zip with the templates.
            git = plan.git
            return tagging.render((template,), sha=git.sha, branch=git.branch, environment=env.name, dirty=git.dirty)[0]
    return service.tags[-1]


def _moving_tags(config: Config) -> set[str]:
    """Tags every build overwrites (staging, latest): what they point to is in use."""
    return {
        _render_moving(template, env)
        for env in config.environments.values()
        for template in env.tags
        if tagging.is_moving(template)
    }


def _render_moving(template: str, env: Environment) -> str:
    """A moving tag of ``env`` (``staging``, ``{branch}-latest``): its branch is the environment's own."""
    return tagging.render((template,), sha="", branch=env.branch, environment=env.name, dirty=False)[0]


async def _deployed_digests(
    http: httpx.AsyncClient, config: Config, credentials: Credentials, options: Options
) -> tuple[set[str], str]:
    """The digests Dokploy's targets pin now, or why they could not be read."""
    if credentials.dokploy_key is None or not (options.dokploy_url or config.dokploy_url):
        return set(), "cannot tell what is deployed without --dokploy-key"
    client = dokploy_client(http, config, credentials, options)
    registry = registry_client(http, config, credentials)
    digests: set[str] = set()
    for group in config.groups:
        for target in group.targets.values():
            refs: list[str] = []
            if target.kind == "compose":
                env = parse_env((await client.compose(target.id)).env or "")
                refs += [env[v] for v in (config.services[s].image_variable for s in group.services) if v in env]
            else:
                refs.append((await client.application(target.id)).docker_image)
            for ref in refs:
                digests.add(await _digest_of(registry, config, ref))
    return digests - {""}, ""


async def _digest_of(registry: RegistryClient, config: Config, ref: str) -> str:
    """The digest a deployed reference names: pinned digests as they are, tags resolved."""
    if "@" in ref:
        return ref.split("@", 1)[1]
    prefix = config.registry.host + "/"
    if not ref.startswith(prefix) or ":" not in ref.removeprefix(prefix):
        return ""
    repository, tag = ref.removeprefix(prefix).rsplit(":", 1)
    try:
        return (await registry.resolve(repository, tag)).digest
    except ManifestNotFoundError:
        return ""


def _promotion_plan(config: Config, environment: str, services: Sequence[str], revisions: Mapping[str, str]) -> Plan:
    """A plan for the promoted services, so the summary and the deploy read like a deploy's."""
    from pipeline.gitinfo import GitContext  # noqa: PLC0415
    from pipeline.plan import make_plan  # noqa: PLC0415

    env = config.environments[environment]
    sha = next(iter(revisions.values()), "0000000")
    git = GitContext(branch=env.branch, sha=sha, event="promote", origin="promoted image")
    return make_plan(config, git, environment=environment, services=list(services))


def _notes(options: Options) -> tuple[str, ...]:
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


def _summary(
    command: str,
    plan: Plan,
    images: Mapping[str, ImageResult],
    groups: Sequence[GroupResult],
    started: _Clock,
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


async def _test_failures(images: Mapping[str, ImageResult], read: ReportReader | None) -> dict[str, list[str]]:
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


async def _notify(http: httpx.AsyncClient, config: Config, credentials: Credentials, summary: RunSummary) -> RunSummary:
    """Post the summary when the config asks for this outcome; a failed post only adds a note."""
    event = "success" if summary.ok else "failure"
    if credentials.notify_webhook is None or event not in config.notify.on:
        return summary
    warning = await notify(http, credentials.notify_webhook, summary)
    return replace(summary, notes=(*summary.notes, warning)) if warning else summary
