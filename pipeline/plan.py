"""The plan: what a run will build, how it tags it, and where it deploys.

A plan is computed from services.toml, the git context and (when given) the
source tree, with no engine and no credentials. Every other command starts
from one, so ``plan`` shows exactly what ``deploy`` would do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pipeline import tags as tagging
from pipeline.config import Config, DokployTarget, Service, check_source
from pipeline.content import content_key
from pipeline.errors import UsageError
from pipeline.gitinfo import GitContext


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePlan:
    """One service: its image, the tags this run gives it, and its content key."""

    name: str
    service: Service
    group: str
    image: str
    registry: str
    repository: str
    tags: tuple[str, ...]
    content_key: str
    content_tag: str
    labels: Mapping[str, str]
    action: str = "build"

    def addresses(self) -> list[str]:
        """``image:tag`` for the content tag, then every tag of the environment."""
        tags = [self.content_tag] if self.content_tag else []
        return [f"{self.image}:{t}" for t in [*tags, *self.tags]]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPlan:
    """One deploy group in this environment, in deploy order."""

    name: str
    services: tuple[str, ...]
    target: DokployTarget | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything a run will do, before it does anything."""

    config: Config
    environment: str
    git: GitContext
    services: tuple[ServicePlan, ...]
    groups: tuple[GroupPlan, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def service(self, name: str) -> ServicePlan:
        """The plan of one selected service, or an error listing the selected ones."""
        for plan in self.services:
            if plan.name == name:
                return plan
        raise UsageError(f"unknown service '{name}'; valid services: {', '.join(s.name for s in self.services)}")

    def with_actions(self, actions: Mapping[str, str]) -> Plan:
        """The same plan with each service's build/reuse decision filled in."""
        services = tuple(replace(s, action=actions.get(s.name, s.action)) for s in self.services)
        return replace(self, services=services)


def choose_environment(config: Config, git: GitContext, environment: str = "") -> str:
    """The environment named, else the one the branch deploys to."""
    if environment:
        if environment not in config.environments:
            raise UsageError(
                f"unknown environment '{environment}'; defined in {config.file}: {', '.join(config.environments)}"
            )
        return environment
    chosen = config.environment_for_branch(git.branch)
    if chosen is None:
        branches = ", ".join(f"{e.branch} -> {e.name}" for e in config.environments.values())
        raise UsageError(
            f"branch '{git.branch}' deploys to no environment ({branches}); "
            "pass --environment to choose one, or --branch"
        )
    return chosen.name


def select_services(config: Config, services: Sequence[str] | str | None) -> list[str]:
    """The services named (a list or a comma-separated string), else all, in config order."""
    if isinstance(services, str):
        services = services.split(",")
    # Actions passes an empty input as "" (or [""]): that means all services.
    services = [s.strip() for s in services or [] if s.strip()]
    if not services:
        return list(config.services)
    unknown = [s for s in services if s not in config.services]
    if unknown:
        raise UsageError(
            f"unknown service{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid services: {', '.join(config.services)}"
        )
    return [s for s in config.services if s in services]


def make_plan(
    config: Config,
    git: GitContext,
    *,
    environment: str = "",
    services: Sequence[str] | str | None = None,
    source: Path | None = None,
    now: datetime | None = None,
) -> Plan:
    """Compute the plan; with ``source``, check it and compute content keys."""
    env_name = choose_environment(config, git, environment)
    env = config.environments[env_name]
    selected = select_services(config, services)
    notes: list[str] = []
    if source is not None:
        check_source(config, source, selected)
    else:
        notes.append("no source given: content keys not computed (pass --source with the repository root)")
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = tuple(tagging.render(env.tags, sha=git.sha, branch=git.branch, environment=env_name, dirty=git.dirty))
    plans = []
    for name in selected:
        service = config.services[name]
        key = content_key(service, source) if source is not None else ""
        labels = {
            "org.opencontainers.image.title": f"{config.registry.image_prefix}{name}",
            "org.opencontainers.image.revision": git.sha + ("-dirty" if git.dirty else ""),
            "org.opencontainers.image.created": created,
        }
        if config.source_url:
            labels["org.opencontainers.image.source"] = config.source_url
        plans.append(
            ServicePlan(
                name=name,
                service=service,
                group=config.group_of(name).name,
                image=config.image(name),
                registry=config.registry.host,
                repository=config.repository(name),
                tags=tags,
                content_key=key,
                content_tag=tagging.content_tag(key) if key else "",
                labels=labels,
                action="build" if key else "build (content unknown)",
            )
        )
    if git.dirty:
        notes.append(f"the tree at {git.sha[:7]} has uncommitted changes: tags carry '-dirty'")
    groups = tuple(
        GroupPlan(name=g.name, services=tuple(s for s in g.services if s in selected), target=g.target(env_name))
        for g in config.groups
        if any(s in selected for s in g.services)
    )
    return Plan(
        config=config,
        environment=env_name,
        git=git,
        services=tuple(plans),
        groups=groups,
        source=str(source) if source is not None else "",
        notes=tuple(notes),
    )


def debug_plan(
    config: Config, *, services: Sequence[str] | str | None, source: Path, origin: str, environment: str = ""
) -> Plan:
    """A plan for building or testing outside a release: nothing is tagged, the revision is 'unknown'."""
    git = GitContext(branch="local", sha="unknown", event="debug", origin=origin)
    return make_plan(
        config, git, environment=environment or next(iter(config.environments)), services=services, source=source
    )


def to_dict(plan: Plan) -> dict[str, object]:
    """The plan as plain data, for ``--format json``."""
    return {
        "environment": plan.environment,
        "git": {
            "branch": plan.git.branch,
            "sha": plan.git.sha,
            "event": plan.git.event,
            "dirty": plan.git.dirty,
            "from": plan.git.origin,
        },
        "services": [
            {
                "name": s.name,
                "image": s.image,
                "tags": list(s.tags),
                "content_key": s.content_key,
                "content_tag": s.content_tag,
                "action": s.action,
                "context": s.service.context,
                "dockerfile": s.service.dockerfile_path,
                "target": s.service.target,
                "platforms": list(s.service.platforms),
                "group": s.group,
            }
            for s in plan.services
        ],
        "groups": [
            {
                "name": g.name,
                "target": {"kind": g.target.kind, "id": g.target.id} if g.target else None,
                "services": list(g.services),
                "health": [
                    {"url": h.url, "expect_status": h.expect_status, "timeout_s": h.timeout_s}
                    for h in (g.target.health if g.target else ())
                ],
            }
            for g in plan.groups
        ],
        "notes": list(plan.notes),
    }


def render_json(plan: Plan) -> str:
    """The plan as indented JSON."""
    return json.dumps(to_dict(plan), indent=2)


def render_table(plan: Plan) -> str:
    """The plan as a plain-text table a person reads in a terminal or an Actions log."""
    git = plan.git
    lines = [
        f"plan: {plan.environment} from branch {git.branch} at {git.sha[:7]}"
        f"{' (dirty)' if git.dirty else ''} ({git.event}, from {git.origin})",
        "",
    ]
    rows = [("SERVICE", "GROUP", "IMAGE", "TAGS", "CONTENT", "ACTION")]
    for s in plan.services:
        rows.append(
            (
                s.name,
                s.group,
                s.image,
                ", ".join(s.tags),
                s.content_tag or "-",
                s.action,
            )
        )
    lines += _columns(rows)
    lines += ["", "deploy order:"]
    for i, g in enumerate(plan.groups, 1):
        target = g.target.describe() if g.target else f"no target for {plan.environment}"
        lines.append(f"  {i}. {g.name} -> {target} ({', '.join(g.services)})")
        for h in g.target.health if g.target else ():
            lines.append(f"       health: {h.url} expects {h.expect_status} within {h.timeout_s:g}s")
    if plan.notes:
        lines += ["", *(f"note: {n}" for n in plan.notes)]
    return "\n".join(lines)


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
