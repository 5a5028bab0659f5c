"""Retention for GHCR that never deletes what is in use.

Every image is planned before anything is deleted. Protected: the newest N
versions per image, whatever a moving tag (``staging``, ``latest``) points to,
whatever Dokploy's targets pin right now, and the children of kept
multi-platform indexes. A dry run by default; ``--apply`` refuses to run when
it cannot read what is deployed.
"""

from __future__ import annotations

import re

import httpx

from pipeline import tags as tagging
from pipeline.config import Config
from pipeline.deployed import digest_of, read_pins
from pipeline.errors import MissingSecretError, RetentionError, UsageError
from pipeline.packages import GitHubPackages
from pipeline.retention import RetentionPlan, apply_plan, collect_children, plan_retention
from pipeline.run import (
    GITHUB_API_URL,
    Clock,
    Credentials,
    Options,
    dokploy_client,
    http_client,
    moving_tag,
    registry_client,
)
from pipeline.summary import RunSummary, ServiceOutcome


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
    started = Clock()
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, got {keep}")
    if owner_type not in ("org", "user"):
        raise UsageError(f"--owner-type must be 'org' or 'user', got {owner_type!r}")
    token = credentials.registry_token
    if token is None:
        raise MissingSecretError(
            "prune needs a GitHub token with read:packages and delete:packages: "
            f"pass --github-token=env://GITHUB_TOKEN (library mode: set {credentials.variable('registry_token')})"
        )
    if not re.match(r"^https?://[^/\s]+", options.github_api_url):
        raise UsageError(
            f"the GitHub API URL {options.github_api_url!r} is not an http(s) URL; "
            f"pass --github-api-url {GITHUB_API_URL} (or your GitHub Enterprise server's /api/v3)"
        )
    if apply and credentials.dokploy_key is None:
        raise MissingSecretError(
            "refusing to delete anything: cannot tell what is deployed without --dokploy-key; "
            f"pass --dokploy-key=env://DOKPLOY_API_KEY (library mode: set {credentials.variable('dokploy_key')})"
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
            f"{tagging.short_digest(d.version.digest)} ({','.join(d.version.tags) or 'untagged'}; {d.reason})"
            for d in plan.delete
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


def _moving_tags(config: Config) -> set[str]:
    """Tags every build overwrites (staging, latest): what they point to is in use."""
    return {
        moving_tag(template, env)
        for env in config.environments.values()
        for template in env.tags
        if tagging.is_moving(template)
    }


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
            for ref in (await read_pins(client, config, group, target)).values():
                digests.add(await digest_of(registry, config, ref) if ref else "")
    return digests - {""}, ""
