"""Which old image versions to delete from GHCR, and deleting exactly those.

GHCR keeps every manifest as its own package version: a multi-platform push is
one tagged index plus untagged platform images (and attestations). Deleting
"everything untagged", as simple cleanup actions do, breaks every multi-platform
image, and deleting by age alone can remove what is deployed. So a plan is made
first, from three facts, and the apply step deletes exactly that plan:

- the versions GitHub lists (``pipeline.packages``),
- which manifests each index references, read from the registry
  (``collect_children``; any read failure stops the run before a deletion),
- what must stay: moving tags (``staging``, ``prod``) and deployed digests.

Signatures and attestations belong to the image they describe, whether they
point at it with an OCI 1.1 ``subject`` or by cosign's ``sha256-<hex>.sig`` tag:
they are read as parts of that image, never as images of their own, so they
neither take a "newest" place nor outlive it, nor go while it stays.

Rules, in order: a protected digest or a version with a protected tag stays; the
newest ``keep`` tagged top-level versions stay; everything a kept version
references stays, transitively. A tagged version beyond that goes. Untagged
versions that no index references ("orphans", e.g. an image whose tag was
re-pushed) go once they are older than ``orphan_grace``: a younger one may be
the first half of a push still in progress (platform images are pushed before
their index). Children of a deleted index that nothing kept references go with
it, after it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import anyio

from pipeline.errors import GitHubAPIError, PipelineError, RetentionError, UsageError
from pipeline.packages import GitHubPackages, PackageVersion
from pipeline.registry import RegistryClient, children, subject
from pipeline.tags import short_digest

_FETCH_CONCURRENCY = 8
# Tags that name what is stored about an image, not an image: cosign's sha256-<hex>.sig
# (.att, .sbom), and the OCI 1.1 referrers fallback tag sha256-<hex> itself.
_REFERRER_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.[A-Za-z0-9_.-]+)?$")
DEFAULT_ORPHAN_GRACE = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Whether one version stays or goes, and why.

    Attributes:
        version: The package version decided on.
        delete: True to delete it.
        reason: Why, in words for the dry-run report.
        parents: For a child deleted with its indexes: their digests (deleted first).
    """

    version: PackageVersion
    delete: bool
    reason: str
    parents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPlan:
    """Every version of one package with its decision; deletions in safe order."""

    package: str
    decisions: tuple[Decision, ...]

    @property
    def delete(self) -> tuple[Decision, ...]:
        """The versions to delete, each index before the children it references."""
        return tuple(decision for decision in self.decisions if decision.delete)

    @property
    def keep(self) -> tuple[Decision, ...]:
        """The versions that stay."""
        return tuple(decision for decision in self.decisions if not decision.delete)

    def render(self) -> str:
        """The plan as a small table for the dry-run report."""
        lines = [f"{self.package}: keep {len(self.keep)}, delete {len(self.delete)}"]
        for decision in self.decisions:
            version = decision.version
            tags = ",".join(version.tags) or "-"
            action = "delete" if decision.delete else "keep"
            lines.append(
                f"  {action:<6} {short_digest(version.digest)}  {version.created_at:%Y-%m-%d %H:%M}  "
                f"{tags}  ({decision.reason})"
            )
        return "\n".join(lines)


def plan_retention(
    package: str,
    versions: Sequence[PackageVersion],
    *,
    keep: int,
    protected_tags: set[str],
    protected_digests: set[str],
    children_of: Mapping[str, Sequence[str]],
    now: datetime | None = None,
    orphan_grace: timedelta | None = DEFAULT_ORPHAN_GRACE,
) -> RetentionPlan:
    """Decide for every version whether it stays, following the module's rules.

    ``children_of`` maps an index digest to the digests it references (from
    ``collect_children``). ``orphan_grace=None`` keeps every orphan.
    """
    if keep < 1:
        raise UsageError(
            f"retention for {package}: keep must be at least 1, got {keep} (GitHub refuses to "
            f"delete a package's last tagged version; delete the package itself instead)"
        )
    now = now or datetime.now(UTC)
    by_digest = {version.digest: version for version in versions}
    parents_of: dict[str, list[str]] = defaultdict(list)
    for parent, kids in children_of.items():
        if parent in by_digest:
            for kid in kids:
                if kid in by_digest and kid != parent:
                    parents_of[kid].append(parent)

    kept: dict[str, str] = {}
    # Only tags that name an image make a version "tagged": a signature tagged
    # sha256-<hex>.sig is an untagged part of its image, and an orphan once that is gone.
    tagged = {v.digest for v in versions if any(not _REFERRER_TAG.match(t) for t in v.tags)}
    top_level_tagged = sorted(
        (v for v in versions if v.digest in tagged and v.digest not in parents_of),
        key=lambda v: (v.created_at, v.id),
        reverse=True,
    )
    newest = {v.digest for v in top_level_tagged[:keep]}
    for version in versions:
        moving = sorted(protected_tags.intersection(version.tags))
        if version.digest in protected_digests:
            kept[version.digest] = "deployed pin"
        elif moving:
            kept[version.digest] = f"moving tag {', '.join(moving)}"
        elif version.digest in newest:
            kept[version.digest] = f"newest {keep}"
        elif (
            version.digest not in tagged
            and version.digest not in parents_of
            and not _is_old(version, now, orphan_grace)
        ):
            kept[version.digest] = _young_orphan_reason(orphan_grace, signature=bool(version.tags))

    # Everything a kept version references stays, however deep.
    pending = list(kept)
    while pending:
        parent = pending.pop()
        for kid in children_of.get(parent, ()):
            if kid in by_digest and kid not in kept:
                kept[kid] = f"part of kept {short_digest(parent)}"
                pending.append(kid)

    decisions: list[Decision] = []
    for version in versions:
        if version.digest in kept:
            decisions.append(Decision(version=version, delete=False, reason=kept[version.digest]))
        elif version.digest in parents_of:
            parents = tuple(parents_of[version.digest])
            reason = f"part of deleted {short_digest(parents[0])}"
            decisions.append(Decision(version=version, delete=True, reason=reason, parents=parents))
        elif version.digest in tagged:
            decisions.append(Decision(version=version, delete=True, reason=f"older than the newest {keep}"))
        else:
            what = "a signature whose image is gone" if version.tags else "untagged and unreferenced"
            decisions.append(Decision(version=version, delete=True, reason=f"{what} for over {_span(orphan_grace)}"))
    depth = _depths(parents_of)
    decisions.sort(key=lambda d: (d.delete, depth(d.version.digest), d.version.created_at, d.version.id))
    return RetentionPlan(package=package, decisions=tuple(decisions))


def _is_old(version: PackageVersion, now: datetime, grace: timedelta | None) -> bool:
    return grace is not None and version.created_at <= now - grace


def _young_orphan_reason(grace: timedelta | None, *, signature: bool) -> str:
    what = "signature whose image is gone" if signature else "untagged orphan"
    if grace is None:
        return f"{what} (orphan deletion is off)"
    return f"{what}, younger than {_span(grace)} (may be a push in progress)"


def _span(span: timedelta | None) -> str:
    """A duration in one unit people read at a glance: 1d, 6h, 30m, 45s."""
    seconds = int(span.total_seconds()) if span is not None else 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _depths(parents_of: Mapping[str, Sequence[str]]) -> Callable[[str], int]:
    """How deep below its deleted indexes a version sits, so parents sort before children."""
    known: dict[str, int] = {}

    def depth(digest: str, seen: frozenset[str] = frozenset()) -> int:
        if digest not in known:
            if digest in seen:  # a reference cycle: malformed, but must not loop
                return 0
            parents = parents_of.get(digest, ())
            known[digest] = 1 + max((depth(p, seen | {digest}) for p in parents), default=-1)
        return known[digest]

    return depth


async def collect_children(
    registry: RegistryClient, repo: str, versions: Sequence[PackageVersion]
) -> dict[str, list[str]]:
    """Map each version to the versions that are part of it: an index's children, an image's referrers.

    Tagged versions are read first; then the untagged ones that no tagged index
    references (they may be indexes whose tag moved away, whose own children
    must be ordered after them, or referrers naming their image by ``subject``).
    Fails closed: if any manifest cannot be read, RetentionError is raised, and
    so nothing is deleted.
    """
    found: dict[str, list[str]] = {}
    for version in versions:
        if described := _described_by_tags(version):
            found.setdefault(described, []).append(version.digest)
    await _read_children(registry, repo, [v for v in versions if v.tags], found)
    referenced = {kid for kids in found.values() for kid in kids}
    await _read_children(registry, repo, [v for v in versions if not v.tags and v.digest not in referenced], found)
    return found


def _described_by_tags(version: PackageVersion) -> str:
    """The image a version's tags say it is about, when all are referrer tags of one image; else ""."""
    matches = [_REFERRER_TAG.match(tag) for tag in version.tags]
    subjects = {m.group(1) for m in matches if m}
    return f"sha256:{subjects.pop()}" if matches and all(matches) and len(subjects) == 1 else ""


async def _read_children(
    registry: RegistryClient, repo: str, versions: Sequence[PackageVersion], found: dict[str, list[str]]
) -> None:
    failures: list[tuple[str, PipelineError]] = []
    limiter = anyio.CapacityLimiter(_FETCH_CONCURRENCY)

    async def read(version: PackageVersion) -> None:
        try:
            async with limiter:
                manifest = await registry.get_manifest(repo, version.digest)
            kids = children(manifest)
        except PipelineError as e:
            failures.append((version.digest, e))
            return
        if kids:
            found.setdefault(version.digest, []).extend(kids)
        if described := subject(manifest):
            found.setdefault(described, []).append(version.digest)

    async with anyio.create_task_group() as tg:
        for version in versions:
            tg.start_soon(read, version)
    if failures:
        digest, error = min(failures, key=lambda failure: failure[0])
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise RetentionError(
            f"could not read the manifest {registry.registry}/{repo}@{digest}{more}: {error}; "
            f"nothing was deleted from {repo}, because without it we cannot tell which platform "
            f"images a kept tag still needs. Fix the registry access and rerun"
        ) from error


Outcome = Literal["deleted", "already gone", "failed", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletionResult:
    """What happened to one version the plan deleted."""

    version: PackageVersion
    outcome: Outcome
    detail: str = ""


async def apply_plan(packages: GitHubPackages, plan: RetentionPlan) -> list[DeletionResult]:
    """Delete exactly ``plan.delete``, in order, reporting each version's outcome.

    One refused version (e.g. GitHub's "last tagged version" rule) does not stop
    the rest, but a child is skipped when its index could not be deleted, since
    that index still needs it; a refused token (401, 403) stops the run.
    """
    results: list[DeletionResult] = []
    still_there: set[str] = set()
    stop_reason = ""
    for decision in plan.delete:
        version = decision.version
        if stop_reason:
            results.append(DeletionResult(version=version, outcome="skipped", detail=stop_reason))
            continue
        blocking = [parent for parent in decision.parents if parent in still_there]
        if blocking:
            still_there.add(version.digest)
            detail = f"its index {short_digest(blocking[0])} was not deleted and still references it"
            results.append(DeletionResult(version=version, outcome="skipped", detail=detail))
            continue
        try:
            deleted = await packages.delete_version(plan.package, version.id)
        except GitHubAPIError as e:
            still_there.add(version.digest)
            results.append(DeletionResult(version=version, outcome="failed", detail=str(e)))
            if e.status in (401, 403):
                stop_reason = f"stopped after GitHub refused the token: {e}"
            continue
        results.append(DeletionResult(version=version, outcome="deleted" if deleted else "already gone"))
    return results


def check_results(package: str, results: Sequence[DeletionResult]) -> None:
    """Raise RetentionError listing the versions that were not deleted, if any."""
    problems = [r for r in results if r.outcome in ("failed", "skipped")]
    if not problems:
        return
    lines = "\n".join(
        f"  {short_digest(r.version.digest)} (id {r.version.id}): {r.outcome}: {r.detail}" for r in problems
    )
    done = len(results) - len(problems)
    raise RetentionError(
        f"retention of {package} deleted {done} of {len(results)} planned versions; these were not "
        f"deleted:\n{lines}\nFix the cause shown and rerun: the plan is recomputed from what is left"
    )
