"""The release runs: test, publish and deploy; and the front of every run.

Each run takes a plan, credentials as ``SecretValue`` and options, does its work
through the engine-free pieces (``images``, ``deploy``, ``registry``) and returns
one ``RunSummary``. The Dagger module (``main.py``) and the library-mode CLI
(``cli.py``) both call this module, so a run on a laptop and a run in Actions
are the same code; ``promote``, ``prune`` and what runs share are re-exported
here so both front doors import one name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import config as config_module
from pipeline import tags as tagging
from pipeline.config import Config
from pipeline.deploy import deploy_groups
from pipeline.doctor import DoctorReport, run_doctor
from pipeline.doctor import render as render_checks
from pipeline.errors import ManifestNotFoundError, PipelineError, UsageError
from pipeline.images import ImageEngine, ImageResult, produce
from pipeline.plan import Plan, ServicePlan
from pipeline.progress import Progress
from pipeline.promote import promote
from pipeline.prune import prune
from pipeline.registry import RegistryClient
from pipeline.run import (
    DEPLOY_TIMEOUT_S,
    GITHUB_API_URL,
    POLL_INTERVAL_S,
    Clock,
    Credentials,
    Options,
    ReportReader,
    RunFailedError,
    check_deployable,
    dokploy_client,
    end_phase,
    finish,
    http_client,
    notify_if_asked,
    option_notes,
    registry_client,
    require_registry_token,
    require_targets,
    start_phase,
    summarize,
    test_failures,
)
from pipeline.status import collect_status
from pipeline.status import render_json as render_status_json
from pipeline.status import render_table as render_status_table
from pipeline.summary import RunSummary

__all__ = [
    "DEPLOY_TIMEOUT_S",
    "GITHUB_API_URL",
    "POLL_INTERVAL_S",
    "Credentials",
    "Options",
    "ReportReader",
    "RunFailedError",
    "deploy",
    "doctor",
    "finish",
    "finish_doctor",
    "promote",
    "prune",
    "publish",
    "published_images",
    "render_doctor",
    "run_tests",
    "status",
]


async def run_tests(
    plan: Plan,
    *,
    engine: ImageEngine[Any],
    options: Options | None = None,
    reports: ReportReader | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Build every planned service at once (bounded) with its tests and smoke check; publish nothing."""
    options = options or Options()
    started = Clock()
    images = await produce(
        plan.services,
        engine=engine,
        registry=None,
        concurrency=options.concurrency or None,
        fail_fast=options.fail_fast,
        force_build=True,
        skip_tests=options.skip_tests,
        dry_run=True,
        progress=progress,
    )
    return summarize(
        "test",
        plan,
        images,
        [],
        started,
        notes=("nothing published", *option_notes(options)),
        test_failures=await test_failures(images, reports),
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
    started = Clock()
    if not options.dry_run:
        require_registry_token(plan.config, credentials)
    async with http_client() as http:
        images = await _images(plan, engine, registry_client(http, plan.config, credentials), options, progress)
    return summarize(
        "publish",
        plan,
        images,
        [],
        started,
        notes=option_notes(options),
        run_url=options.run_url,
        test_failures=await test_failures(images, reports),
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
    started = Clock()
    require_targets(plan)
    if not options.dry_run and not options.skip_build:
        require_registry_token(plan.config, credentials)
    if engine is None and not options.skip_build:
        raise UsageError("building needs a Dagger engine: run through `dagger call deploy`, or pass --skip-build")
    async with http_client() as http:
        dokploy = dokploy_client(http, plan.config, credentials, options)
        registry = registry_client(http, plan.config, credentials)
        # Cheap checks first: the published images (with --skip-build), then every target, read
        # without writing, so a Dokploy that cannot take this deploy costs no build.
        images = await published_images(plan, registry) if options.skip_build else {}
        await check_deployable(
            plan.config, plan.environment, _current_pins(plan), client=dokploy, http=http, options=options
        )
        if engine is not None and not options.skip_build:
            phase = start_phase(progress, "build, test and publish")
            images = await _images(plan, engine, registry, options, progress)
            end_phase(phase, [f"{name}: {r.step} failed" for name, r in images.items() if r.error is not None])
        pins = {name: r.reference for name, r in images.items() if r.reference}
        skip = {name: f"{r.step or 'build'} failed" for name, r in images.items() if not r.reference}
        if options.dry_run and not options.skip_build:
            # Nothing was published, so each group is checked against its current images.
            # (With --skip-build the images were published: the pins are their digests, as a real run's.)
            pins, skip = _current_pins(plan), {}
        phase = start_phase(progress, f"deploy {plan.environment}: {', '.join(g.name for g in plan.groups)}")
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
        end_phase(phase, [f"{g.group}: {g.status}" for g in groups if not g.ok and g.status != "skipped"])
        summary = summarize(
            "deploy",
            plan,
            images,
            groups,
            started,
            notes=option_notes(options),
            run_url=options.run_url,
            test_failures=await test_failures(images, reports),
        )
        summary = await notify_if_asked(http, plan.config, credentials, summary)
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
            config,
            environment=environment,
            client=dokploy_client(http, config, credentials, options, purpose="reading the status"),
            http=http,
        )
    rendered = render_status_json(report) if output == "json" else render_status_table(report)
    if any(target.error for target in report.targets):
        # Some target could not be read: the view is incomplete, so the command fails (with the view).
        raise RunFailedError(rendered)
    return rendered


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


def _current_pins(plan: Plan) -> dict[str, str]:
    """Each service at this commit's immutable tag: what a deploy pins before digests exist."""
    return {s.name: f"{s.image}:{_immutable_tag(plan, s)}" for s in plan.services}


def _immutable_tag(plan: Plan, service: ServicePlan) -> str:
    """The tag of this commit that never moves: the first rendered from a template with {sha}."""
    env = plan.config.environments[plan.environment]
    for template in env.tags:
        if not tagging.is_moving(template):
            # One template at a time: render() drops duplicates, which would shift a zip with the templates.
            git = plan.git
            return tagging.render((template,), sha=git.sha, branch=git.branch, environment=env.name, dirty=git.dirty)[0]
    return service.tags[-1]
