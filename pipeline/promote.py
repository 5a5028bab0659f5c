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
from pipeline.deployed import digest_of, read_pins
from pipeline.dokploy import DokployClient
from pipeline.errors import ManifestNotFoundError, UsageError
from pipeline.images import ImageResult
from pipeline.plan import Plan
from pipeline.progress import Progress
from pipeline.registry import RegistryClient
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
        reader = dokploy_client(http, config, credentials, options) if credentials.dokploy_key else None
        # Check and resolve everything first: nothing moves unless every image can be promoted.
        digests, notes = await _source_digests(
            config, source_env, selected, source_tag=source_tag, registry=registry, dokploy=reader
        )
        revisions: dict[str, str] = {}
        for name in selected:
            revisions[name] = await registry.revision(config.repository(name), digests[name])
            if revisions[name].endswith("-dirty"):
                raise UsageError(
                    f"cannot promote {name}: {config.image(name)}@{digests[name]} was built from uncommitted "
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
            notes=(f"promoted {source_env} -> {target_env} by digest: nothing rebuilt", *notes),
            run_url=options.run_url,
            change="promoted",
        )
        summary = await notify_if_asked(http, config, credentials, summary)
    return summary


async def _source_digests(
    config: Config,
    source_env: str,
    services: Sequence[str],
    *,
    source_tag: str,
    registry: RegistryClient,
    dokploy: DokployClient | None,
) -> tuple[dict[str, str], list[str]]:
    """The digest each service runs in ``source_env``, and notes on how each was found.

    What runs is read from Dokploy's pins: the moving tag moves when an image is
    published, before its deploy, so after a failed and rolled-back deploy it names
    a build that never went live. The tag is the answer only where the environment
    has no target to read (or no key to read it with), and the summary says so.
    """
    digests: dict[str, str] = {}
    notes: list[str] = []
    pins: dict[str, str] = {}
    for group in config.groups:
        target = group.targets.get(source_env)
        if dokploy is not None and target is not None and set(group.services) & set(services):
            pins |= await read_pins(dokploy, config, group, target)
    for name in services:
        image = config.image(name)
        try:
            tagged = (await registry.resolve(config.repository(name), source_tag)).digest
        except ManifestNotFoundError:
            tagged = ""
        if name not in pins:
            if not tagged:
                raise UsageError(
                    f"cannot promote {name}: {image}:{source_tag} does not exist; deploy {source_env} first"
                )
            why = "no --dokploy-key" if dokploy is None else f"{source_env} has no Dokploy target for it"
            notes.append(f"{name}: promoted what {image}:{source_tag} names ({why} to read what runs)")
            digests[name] = tagged
            continue
        ref = pins[name]
        target = config.group_of(name).targets[source_env]
        if not ref:
            raise UsageError(
                f"cannot promote {name}: {source_env}'s {target.describe()} pins no image for it; "
                f"deploy {source_env} first"
            )
        running = await digest_of(registry, config, ref) if ref.startswith((image + "@", image + ":")) else ""
        if running and "@" in ref:
            try:  # a digest pin names itself; it must still be in the registry to be copied
                await registry.resolve(config.repository(name), running)
            except ManifestNotFoundError:
                running = ""
        if not running:
            raise UsageError(
                f"cannot promote {name}: {source_env}'s {target.describe()} runs {ref}, which is not an image "
                f"of {image} in the registry; deploy {source_env} with this pipeline first"
            )
        if tagged and tagged != running:
            notes.append(
                f"{name}: promoted what {source_env} runs ({tagging.short_digest(running)}), not what "
                f"{source_tag} names ({tagging.short_digest(tagged)}, published but not running there)"
            )
        digests[name] = running
    return digests, notes


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
