"""Promotion without rebuilding: one environment's exact digests onto another's tags.

Every image is resolved (and its revision read) before any tag moves, so a
missing or dirty image stops the promotion with nothing changed. Tags are
byte-exact manifest copies whose digests are verified; then the target
environment's groups deploy as any deploy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pipeline import tags as tagging
from pipeline.config import Config
from pipeline.deploy import GroupResult, deploy_groups
from pipeline.errors import ManifestNotFoundError, UsageError
from pipeline.images import ImageResult
from pipeline.plan import Plan
from pipeline.progress import Progress
from pipeline.run import (
    Clock,
    Credentials,
    Options,
    check_deployable,
    dokploy_client,
    http_client,
    moving_tag,
    notify_if_asked,
    registry_client,
    require_targets,
    summarize,
)
from pipeline.summary import RunSummary


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

    started = Clock()
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
    source_tag = moving_tag(moving[0], source)
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
            # A Dokploy that cannot take the deploy stops the promotion before any tag moves.
            pins = {n: tagging.pinned(config.image(n), digests[n]) for n in selected}
            await check_deployable(config, target_env, pins, client=dokploy, http=http, options=options)
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
        summary = summarize(
            "promote",
            plan,
            images,
            groups,
            started,
            notes=(f"promoted {source_env} -> {target_env} by digest: nothing rebuilt",),
            run_url=options.run_url,
            change="promoted",
        )
        summary = await notify_if_asked(http, config, credentials, summary)
    return summary


def _promotion_plan(config: Config, environment: str, services: Sequence[str], revisions: Mapping[str, str]) -> Plan:
    """A plan for the promoted services, so the summary and the deploy read like a deploy's."""
    from pipeline.gitinfo import GitContext  # noqa: PLC0415
    from pipeline.plan import make_plan  # noqa: PLC0415

    env = config.environments[environment]
    sha = next(iter(revisions.values()), "0000000")
    git = GitContext(branch=env.branch, sha=sha, event="promote", origin="promoted image")
    plan = make_plan(config, git, environment=environment, services=list(services))
    # make_plan's notes are about building from a source (content keys, dirty trees): promote builds nothing.
    return replace(plan, notes=())
