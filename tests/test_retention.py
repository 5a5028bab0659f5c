"""Retention planning (pure), reading children from a real registry, and applying via the GitHub double."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from pipeline.errors import RetentionError, UsageError
from pipeline.packages import GitHubPackages, PackageVersion
from pipeline.registry import RegistryClient
from pipeline.retention import RetentionPlan, apply_plan, check_results, collect_children, plan_retention
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from pipeline.tags import short_digest as short
from tests.support.github_double import LAST_TAGGED, GitHubDouble
from tests.support.images import push_image, push_index, push_referrer
from tests.support.registry import FaultProxy, RunningRegistry, loopback_http

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=30)
FAST = RetryPolicy(attempts=2, timeout_s=5.0, wait_initial_s=0.01, wait_max_s=0.02)
OWNER = "bizoholic-digital"
PACKAGE = "bizosaas-brain-gateway"
REPO = f"{OWNER}/{PACKAGE}"
TOKEN = "test-retention-token-for-the-double"  # a made-up value


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def v(n: int, *tags: str, day: float = 0) -> PackageVersion:
    return PackageVersion(id=1000 + n, digest=d(n), tags=tags, created_at=T0 + dt.timedelta(days=day))


def decided(plan: RetentionPlan, digest: str) -> tuple[bool, str]:
    decision = next(x for x in plan.decisions if x.version.digest == digest)
    return decision.delete, decision.reason


def plan_of(versions, *, keep=2, tags=(), digests=(), children=None, **kwargs):
    return plan_retention(
        PACKAGE,
        versions,
        keep=keep,
        protected_tags=set(tags),
        protected_digests=set(digests),
        children_of=children or {},
        now=NOW,
        **kwargs,
    )


# ---- planning (pure) -------------------------------------------------------------------


def test_keeps_the_newest_tagged_versions_and_deletes_older_ones() -> None:
    """With keep=2 the two newest tagged versions stay and the rest go, each with its reason."""
    versions = [v(1, "sha-1", day=1), v(2, "sha-2", day=2), v(3, "sha-3", day=3), v(4, "sha-4", day=4)]

    plan = plan_of(versions, keep=2)

    assert decided(plan, d(4)) == (False, "newest 2")
    assert decided(plan, d(3)) == (False, "newest 2")
    assert decided(plan, d(2)) == (True, "older than the newest 2")
    assert [x.version.digest for x in plan.delete] == [d(1), d(2)]


def test_moving_tags_and_deployed_digests_are_protected() -> None:
    """An old version carrying a moving tag, or pinned by a deployment, is kept."""
    versions = [v(1, "sha-1", "prod", day=1), v(2, "sha-2", day=2), v(3, "sha-3", day=3), v(4, "sha-4", day=4)]

    plan = plan_of(versions, keep=1, tags={"prod", "staging"}, digests={d(2)})

    assert decided(plan, d(1)) == (False, "moving tag prod")
    assert decided(plan, d(2)) == (False, "deployed pin")
    assert decided(plan, d(3)) == (True, "older than the newest 1")
    assert decided(plan, d(4)) == (False, "newest 1")


def test_children_of_a_kept_index_are_kept_and_of_a_deleted_one_go_after_it() -> None:
    """Platform images follow their index: kept with a kept one, deleted after a deleted one."""
    versions = [v(1, "sha-1", day=1), v(11, day=1), v(12, day=1), v(2, "sha-2", day=2), v(21, day=2), v(22, day=2)]
    children = {d(1): [d(11), d(12)], d(2): [d(21), d(22)]}

    plan = plan_of(versions, keep=1, children=children)

    assert decided(plan, d(21)) == (False, f"part of kept {short(d(2))}")
    assert decided(plan, d(11)) == (True, f"part of deleted {short(d(1))}")
    order = [x.version.digest for x in plan.delete]
    assert order[0] == d(1)
    assert set(order[1:]) == {d(11), d(12)}
    assert all(x.parents == (d(1),) for x in plan.delete[1:])


def test_a_child_shared_with_a_kept_index_is_kept() -> None:
    """A platform image referenced by both a deleted and a kept index stays."""
    versions = [v(1, "sha-1", day=1), v(2, "sha-2", day=2), v(9, day=1)]

    plan = plan_of(versions, keep=1, children={d(1): [d(9)], d(2): [d(9)]})

    assert decided(plan, d(9)) == (False, f"part of kept {short(d(2))}")
    assert [x.version.digest for x in plan.delete] == [d(1)]


def test_references_are_followed_through_nested_indexes() -> None:
    """Whatever a kept index references, however deep, is kept."""
    versions = [v(1, "sha-1", day=1), v(2, day=1), v(3, day=1)]

    plan = plan_of(versions, keep=1, children={d(1): [d(2)], d(2): [d(3)]})

    assert plan.delete == ()
    assert decided(plan, d(3)) == (False, f"part of kept {short(d(2))}")


def test_old_orphans_go_and_young_orphans_stay() -> None:
    """Unreferenced untagged versions are deleted only after the grace period."""
    versions = [v(1, "sha-1", day=29), v(5, day=1), v(6, day=29.9)]

    plan = plan_of(versions, keep=1, orphan_grace=dt.timedelta(days=1))
    keep_all = plan_of(versions, keep=1, orphan_grace=None)

    assert decided(plan, d(5)) == (True, "untagged and unreferenced for over 1d")
    assert decided(plan, d(6)) == (False, "untagged orphan, younger than 1d (may be a push in progress)")
    assert keep_all.delete == ()


@pytest.mark.parametrize("suffix", [".sig", ""], ids=["cosign", "oci-fallback-tag"])
def test_a_signature_whose_image_is_gone_is_an_orphan_not_a_newest_image(suffix: str) -> None:
    """Signed after the fact, so newer than every image: still never one of the newest N."""
    gone = f"sha256-{'e' * 64}{suffix}"
    young = f"sha256-{'f' * 64}.att"
    versions = [v(1, "sha-1", day=1), v(2, "sha-2", day=2), v(7, gone, day=3), v(8, young, day=29.9)]

    plan = plan_of(versions, keep=1, orphan_grace=dt.timedelta(days=1))

    assert decided(plan, d(2)) == (False, "newest 1")
    assert decided(plan, d(1)) == (True, "older than the newest 1")
    assert decided(plan, d(7)) == (True, "a signature whose image is gone for over 1d")
    assert decided(plan, d(8)) == (False, "signature whose image is gone, younger than 1d (may be a push in progress)")


def test_keep_must_be_at_least_one() -> None:
    """keep=0 would empty the package, which GitHub refuses; it is a usage error."""
    with pytest.raises(UsageError, match="keep must be at least 1"):
        plan_of([v(1, "sha-1")], keep=0)


def test_render_lists_every_decision() -> None:
    """The dry-run table has a header and one line per version with its reason."""
    plan = plan_of([v(1, "sha-1", day=1), v(2, "sha-2", "staging", day=2)], keep=1, tags={"staging"})

    lines = plan.render().splitlines()

    assert lines[0] == f"{PACKAGE}: keep 1, delete 1"
    assert any(line.strip().startswith("delete") and "older than the newest 1" in line for line in lines)
    assert any("sha-2,staging" in line and "moving tag staging" in line for line in lines)


# ---- against a real registry and the GitHub double -------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


@dataclass
class Build:
    index: str
    children: list[str]
    tag: str


async def publish(registry: RegistryClient, github: GitHubDouble, n: int, *, attestations: bool = False) -> Build:
    """Push a multi-platform build to the registry and record it in GitHub the way GHCR does."""
    tag = f"sha-{n:04d}"
    index, kids = await push_index(registry, REPO, tag, payload=f"build {n}".encode(), attestations=attestations)
    when = T0 + dt.timedelta(days=n)
    for kid in kids:
        github.push(OWNER, PACKAGE, kid, created_at=when)
    github.push(OWNER, PACKAGE, index, [tag], created_at=when)
    return Build(index, kids, tag)


async def move_tag(registry: RegistryClient, github: GitHubDouble, build: Build, tag: str) -> None:
    """Promote by copy in the registry; GitHub moves the tag onto the same version."""
    await registry.copy_tag(REPO, build.tag, [tag])
    github.push(OWNER, PACKAGE, build.index, [tag])


def clients(http: httpx.AsyncClient, host: str, github: GitHubDouble) -> tuple[RegistryClient, GitHubPackages]:
    github.add_token(TOKEN)
    registry = RegistryClient(http, registry=host, retry=FAST, timeout_s=10)
    packages = GitHubPackages(
        http, token=SecretValue("GITHUB_TOKEN", TOKEN), owner=OWNER, owner_type="org", api_url=github.url, retry=FAST
    )
    return registry, packages


@pytest.mark.registry
async def test_dry_run_plan_equals_what_apply_deletes(
    registry: RunningRegistry, github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """Over five multi-arch builds, apply deletes exactly what the dry-run plan listed, parents first."""
    reg, packages = clients(http, registry.host, github)
    builds = [await publish(reg, github, n, attestations=(n == 1)) for n in range(1, 6)]
    await move_tag(reg, github, builds[4], "staging")
    await move_tag(reg, github, builds[2], "prod")
    old_orphan = await push_image(reg, REPO, None, payload=b"re-pushed long ago")
    github.push(OWNER, PACKAGE, old_orphan, created_at=T0)
    young_orphan = await push_image(reg, REPO, None, payload=b"push in progress")
    github.push(OWNER, PACKAGE, young_orphan, created_at=NOW - dt.timedelta(minutes=5))

    versions = await packages.list_versions(PACKAGE)
    children = await collect_children(reg, REPO, versions)
    plan = plan_retention(
        PACKAGE,
        versions,
        keep=2,
        protected_tags={"staging", "prod"},
        protected_digests={builds[1].index},
        children_of=children,
        now=NOW,
    )
    results = await apply_plan(packages, plan)

    b1 = builds[0]
    assert children[b1.index] == b1.children
    assert {x.version.digest for x in plan.delete} == {b1.index, *b1.children, old_orphan}
    assert decided(plan, builds[2].index) == (False, "moving tag prod")
    assert decided(plan, builds[1].index) == (False, "deployed pin")
    assert decided(plan, builds[3].children[0])[0] is False
    assert [r.outcome for r in results] == ["deleted"] * len(plan.delete)
    check_results(PACKAGE, results)
    active = {x.name for x in github.active(OWNER, PACKAGE)}
    assert active == {x.version.digest for x in plan.keep}
    ids = {x.version.id: x.version.digest for x in plan.delete}
    deletes = [ids[int(r.path.rsplit("/", 1)[1])] for r in github.requests if r.method == "DELETE"]
    assert deletes.index(b1.index) < min(deletes.index(kid) for kid in b1.children)


@pytest.mark.registry
async def test_collect_children_finds_indexes_whose_tag_moved_away(
    registry: RunningRegistry, github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """An index left untagged is read too, so its children are deleted after it, not before."""
    reg, _ = clients(http, registry.host, github)
    build = await publish(reg, github, 1)
    newer = await publish(reg, github, 2)
    # Re-pushing different bytes at sha-0001 leaves the first index untagged.
    github.push(OWNER, PACKAGE, newer.index, [build.tag])
    versions = [
        PackageVersion(id=x.id, digest=x.name, tags=tuple(x.tags), created_at=x.created_at)
        for x in github.active(OWNER, PACKAGE)
    ]

    children = await collect_children(reg, REPO, versions)
    plan = plan_retention(
        PACKAGE, versions, keep=1, protected_tags=set(), protected_digests=set(), children_of=children, now=NOW
    )

    assert children[build.index] == build.children
    assert plan.delete[0].version.digest == build.index
    assert {x.version.digest for x in plan.delete} == {build.index, *build.children}


@pytest.mark.registry
async def test_signatures_and_attestations_go_with_their_image_and_take_no_newest_place(
    registry: RunningRegistry, github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """A subject referrer or a sha256-<hex>.sig tag is part of its image: kept with it, deleted after it."""
    reg, packages = clients(http, registry.host, github)
    old, new = await publish(reg, github, 1), await publish(reg, github, 2)
    later = T0 + dt.timedelta(days=20)  # signed after the fact: newer than every image
    parts: dict[str, list[str]] = {}
    for build in (old, new):
        by_subject = await push_referrer(reg, REPO, build.index)
        github.push(OWNER, PACKAGE, by_subject, created_at=later)
        # cosign's tag for the new image, the OCI 1.1 fallback tag (no suffix) for the old one
        sig_tag = f"sha256-{build.index.removeprefix('sha256:')}" + (".sig" if build is new else "")
        by_tag = await push_referrer(reg, REPO, build.index, tag=sig_tag)
        github.push(OWNER, PACKAGE, by_tag, [sig_tag], created_at=later)
        parts[build.index] = [by_subject, by_tag]

    versions = await packages.list_versions(PACKAGE)
    children = await collect_children(reg, REPO, versions)
    plan = plan_retention(
        PACKAGE, versions, keep=1, protected_tags=set(), protected_digests=set(), children_of=children, now=NOW
    )

    assert decided(plan, new.index) == (False, "newest 1")
    for part in parts[new.index]:
        assert decided(plan, part) == (False, f"part of kept {short(new.index)}")
    for part in parts[old.index]:
        assert decided(plan, part) == (True, f"part of deleted {short(old.index)}")
    order = [x.version.digest for x in plan.delete]
    assert order[0] == old.index
    assert set(order) == {old.index, *old.children, *parts[old.index]}


@pytest.mark.registry
@pytest.mark.parametrize("failure", ["missing-manifest", "registry-down"])
async def test_collect_children_fails_closed(
    fault_proxy: FaultProxy, github: GitHubDouble, http: httpx.AsyncClient, failure: str
) -> None:
    """If one manifest cannot be read, RetentionError names it and nothing is planned or deleted."""
    reg, _ = clients(http, fault_proxy.host, github)
    build = await publish(reg, github, 1)
    versions = [
        PackageVersion(id=x.id, digest=x.name, tags=tuple(x.tags), created_at=x.created_at)
        for x in github.active(OWNER, PACKAGE)
    ]
    broken = build.index
    if failure == "missing-manifest":
        broken = d(77)
        versions.append(PackageVersion(id=77, digest=broken, tags=("ghost",), created_at=T0))
    else:
        fault_proxy.fail(503, times=100, methods="GET")

    with pytest.raises(RetentionError) as caught:
        await collect_children(reg, REPO, versions)

    assert f"{REPO}@{broken}" in str(caught.value)
    assert "nothing was deleted" in str(caught.value)
    assert not [r for r in github.requests if r.method == "DELETE"]


def _versions(github: GitHubDouble) -> list[PackageVersion]:
    return [
        PackageVersion(id=x.id, digest=x.name, tags=tuple(x.tags), created_at=x.created_at)
        for x in github.active(OWNER, PACKAGE)
    ]


async def test_apply_reports_failures_and_skips_children_of_a_refused_index(
    github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """A 400 'last tagged version' fails that index, skips its children, and the rest still go."""
    _, packages = clients(http, "127.0.0.1:1", github)
    github.push(OWNER, PACKAGE, d(11), created_at=T0)
    github.push(OWNER, PACKAGE, d(1), ["sha-1"], created_at=T0)
    github.push(OWNER, PACKAGE, d(2), ["sha-2"], created_at=T0 + dt.timedelta(days=2))
    github.push(OWNER, PACKAGE, d(5), created_at=T0)
    plan = plan_of(_versions(github), keep=1, children={d(1): [d(11)]})
    # Someone deletes the kept version between plan and apply: sha-1 becomes the last tagged one.
    github.active(OWNER, PACKAGE)[0].deleted_at = NOW

    results = await apply_plan(packages, plan)

    outcome = {r.version.digest: (r.outcome, r.detail) for r in results}
    assert outcome[d(1)][0] == "failed"
    assert LAST_TAGGED in outcome[d(1)][1]
    assert outcome[d(11)] == ("skipped", f"its index {short(d(1))} was not deleted and still references it")
    assert outcome[d(5)] == ("deleted", "")
    with pytest.raises(RetentionError, match=r"deleted 1 of 3 planned versions") as caught:
        check_results(PACKAGE, results)
    assert short(d(11)) in str(caught.value)


async def test_apply_treats_already_deleted_versions_as_done(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """A version deleted by someone else since the listing is reported as already gone."""
    _, packages = clients(http, "127.0.0.1:1", github)
    github.push(OWNER, PACKAGE, d(1), ["sha-1"], created_at=T0)
    github.push(OWNER, PACKAGE, d(2), ["sha-2"], created_at=T0 + dt.timedelta(days=1))
    plan = plan_of(_versions(github), keep=1)
    github.active(OWNER, PACKAGE)[1].deleted_at = NOW

    results = await apply_plan(packages, plan)

    assert [(r.version.digest, r.outcome) for r in results] == [(d(1), "already gone")]
    check_results(PACKAGE, results)


async def test_apply_stops_when_the_token_is_refused(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """Without delete:packages the first delete fails and the rest are skipped, not hammered."""
    _, packages = clients(http, "127.0.0.1:1", github)
    github.add_token(TOKEN, scopes=["read:packages"])
    for n in range(1, 5):
        github.push(OWNER, PACKAGE, d(n), [f"sha-{n}"], created_at=T0 + dt.timedelta(days=n))
    plan = plan_of(_versions(github), keep=1)

    results = await apply_plan(packages, plan)

    assert [r.outcome for r in results] == ["failed", "skipped", "skipped"]
    assert "stopped after GitHub refused the token" in results[1].detail
    assert len([r for r in github.requests if r.method == "DELETE"]) == 1
    assert TOKEN not in "".join(r.detail for r in results)
