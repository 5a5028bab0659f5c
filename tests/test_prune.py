"""Tests for pipeline.prune: retention that never deletes what is in use.

The GitHub Packages double is seeded consistently with a real registry (Debian's docker-registry),
including a multi-platform index; what is deployed is read from the Dokploy double.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import flows
from pipeline.errors import MissingSecretError, RetentionError, UsageError
from pipeline.summary import RunSummary, render_text
from pipeline.tags import short_digest as short
from tests.support.github_double import GitHubDouble
from tests.support.images import push_image, push_index
from tests.support.world import (
    BACKEND_PROD_ID,
    NAMESPACE,
    PREFIX,
    REGISTRY_TOKEN,
    World,
    assert_no_secrets,
    rendered,
)

FRONTEND = ("bizoholic-frontend", "client-portal")


@dataclass(frozen=True)
class History:
    """brain-gateway's versions, oldest first (see ``seed_history``)."""

    a: str
    b: str
    b_kids: list[str]
    c: str
    d: str
    orphan: str
    e: str
    e_kids: list[str]
    f: str


async def seed_history(world: World, github: GitHubDouble) -> History:
    """Push brain-gateway's history to the registry and record the same versions on the GitHub double.

    Oldest first: A (tagged), index B with two platform children, C (pinned in production),
    D (the moving tag prod), an old untagged orphan, index E with children, F (staging).
    The frontend images have one tagged version each.
    """
    github.add_token(REGISTRY_TOKEN)
    repo, package = world.repository("brain-gateway"), f"{PREFIX}brain-gateway"
    start = datetime.now(UTC) - timedelta(days=30)
    minute = iter(range(100))

    def record(digest: str, *tags: str) -> None:
        github.push(NAMESPACE, package, digest, tags, created_at=start + timedelta(minutes=next(minute)))

    a = await push_image(world.client, repo, "staging-a000001", payload=b"A")
    record(a, "staging-a000001")
    b, b_kids = await push_index(world.client, repo, "staging-b000002", payload=b"B")
    for kid in b_kids:
        record(kid)
    record(b, "staging-b000002")
    c = await push_image(world.client, repo, "staging-c000003", payload=b"C")
    record(c, "staging-c000003")
    d = await push_image(world.client, repo, "prod", payload=b"D")
    record(d, "prod")
    orphan = await push_image(world.client, repo, None, payload=b"orphan")
    record(orphan)
    e, e_kids = await push_index(world.client, repo, "staging-e000005", payload=b"E")
    for kid in e_kids:
        record(kid)
    record(e, "staging-e000005")
    f = await push_image(world.client, repo, "staging", payload=b"F")
    await world.client.copy_tag(repo, "staging", ["staging-f000006"])
    record(f, "staging", "staging-f000006")
    for service in FRONTEND:
        digest = await push_image(world.client, world.repository(service), "staging", payload=service.encode())
        github.push(NAMESPACE, f"{PREFIX}{service}", digest, ["staging"], created_at=start)
    # C is what production runs.
    compose = world.dokploy.double.composes[BACKEND_PROD_ID]
    compose.env = (compose.env or "").replace(
        world.old_reference("brain-gateway", "production"), f"{world.image('brain-gateway')}@{c}"
    )
    return History(a=a, b=b, b_kids=b_kids, c=c, d=d, orphan=orphan, e=e, e_kids=e_kids, f=f)


def listed(summary: RunSummary, package: str, verb: str) -> set[str]:
    """The short digests a prune summary says it deletes (or would) from ``package``."""
    lines = [n for n in summary.notes if n.startswith(f"{package}: {verb} ")]
    assert len(lines) == 1, summary.notes
    return set(re.findall(r"sha256:[0-9a-f]{12}", lines[0]))


def deleted(github: GitHubDouble, service: str) -> set[str]:
    package = github.package(NAMESPACE, f"{PREFIX}{service}")
    return {short(v.name) for v in package.versions if v.deleted_at is not None}


async def test_a_deployed_pin_with_an_inline_comment_is_still_protected(world, github):
    """The env line `X=img@sha256:... # note` pins the same digest: prune reads it as the deploy writes it."""
    v = await seed_history(world, github)
    compose = world.dokploy.double.composes[BACKEND_PROD_ID]
    pinned = f"{world.image('brain-gateway')}@{v.c}"
    assert f'"{pinned}"\n' in (compose.env or "")  # the line is `export BRAIN_GATEWAY_IMAGE="<pin>"`
    compose.env = (compose.env or "").replace(f'"{pinned}"\n', f'"{pinned}"  # pinned by the last deploy\n')
    options = world.options(github_api_url=github.url)

    dry = await flows.prune(
        world.config(), keep=1, apply=False, owner_type="org", credentials=world.credentials(), options=options
    )

    assert short(v.c) not in listed(dry, f"{PREFIX}brain-gateway", "would delete")


async def test_prune_dry_run_lists_what_apply_then_deletes_exactly(world, github):
    """Dry run deletes nothing and lists A, B, B's children and the orphan; --apply deletes exactly those."""
    v = await seed_history(world, github)
    options = world.options(github_api_url=github.url)
    package = f"{PREFIX}brain-gateway"

    dry = await flows.prune(
        world.config(), keep=2, apply=False, owner_type="org", credentials=world.credentials(), options=options
    )

    assert dry.ok, render_text(dry)
    assert [r.method for r in github.requests if r.method == "DELETE"] == []
    would = listed(dry, package, "would delete")
    assert would == {short(d) for d in [v.a, v.b, *v.b_kids, v.orphan]}
    text = render_text(dry)
    assert "kept 6, would delete 5" in text
    for digest in would:
        assert digest in text
    assert "dry run: nothing deleted (pass --apply to delete)" in dry.notes

    applied = await flows.prune(
        world.config(), keep=2, apply=True, owner_type="org", credentials=world.credentials(), options=options
    )

    assert applied.ok, render_text(applied)
    assert deleted(github, "brain-gateway") == would == listed(applied, package, "deleting")
    active = {v.name for v in github.active(NAMESPACE, package)}
    assert active == {v.c, v.d, v.e, *v.e_kids, v.f}
    assert deleted(github, "bizoholic-frontend") == deleted(github, "client-portal") == set()
    assert_no_secrets(rendered(dry), rendered(applied))


async def test_prune_apply_without_a_dokploy_key_refuses_before_asking_github(world, github):
    """Without the key nobody can tell what is deployed: --apply is a missing secret (exit 2), sends nothing."""
    await seed_history(world, github)

    with pytest.raises(MissingSecretError, match="--dokploy-key") as caught:
        await flows.prune(
            world.config(),
            keep=2,
            apply=True,
            owner_type="org",
            credentials=world.credentials(dokploy_key=False),
            options=world.options(github_api_url=github.url),
        )

    assert caught.value.exit_code == 2
    assert "library mode: set DOKPLOY_API_KEY" in str(caught.value)
    assert github.requests == []


@pytest.mark.parametrize("url", ["", "api.github.com", "127.0.0.1:9"])
async def test_prune_refuses_a_github_api_url_without_a_scheme_before_any_request(world, github, url):
    """A mistyped --github-api-url is a usage error naming the flag, not 'could not reach the GitHub API'."""
    with pytest.raises(UsageError, match="--github-api-url") as caught:
        await flows.prune(
            world.config(),
            keep=2,
            apply=False,
            owner_type="org",
            credentials=world.credentials(),
            options=world.options(github_api_url=url),
        )

    assert caught.value.exit_code == 2
    assert github.requests == []


async def test_prune_fails_closed_when_a_manifest_cannot_be_read(world, github):
    """A version the registry cannot serve, in the last image: RetentionError, and no image loses a version."""
    await seed_history(world, github)
    missing = "sha256:" + "d" * 64
    github.push(NAMESPACE, f"{PREFIX}client-portal", missing, ["staging-d000004"])

    with pytest.raises(RetentionError) as caught:
        await flows.prune(
            world.config(),
            keep=2,
            apply=True,
            owner_type="org",
            credentials=world.credentials(),
            options=world.options(github_api_url=github.url),
        )

    assert f"{world.repository('client-portal')}@{missing}" in str(caught.value)
    assert "nothing was deleted" in str(caught.value)
    assert [r for r in github.requests if r.method == "DELETE"] == []
    assert deleted(github, "brain-gateway") == set()


async def test_prune_keeps_what_a_moving_tag_naming_the_branch_points_to(world, github):
    """'{branch}-latest' renders to staging-latest, which protects its version like any moving tag."""
    config = world.write_config(staging_tags=("{branch}-latest", "{branch}-{sha}"))
    github.add_token(REGISTRY_TOKEN)
    package = f"{PREFIX}brain-gateway"
    start = datetime.now(UTC) - timedelta(days=10)
    history = [["staging-latest", "staging-1111111"], ["staging-2222222"], ["staging-3333333"]]
    digests = []
    for minute, tags in enumerate(history):
        digest = await world.seed("brain-gateway", tags, payload=f"brain {minute}".encode())
        github.push(NAMESPACE, package, digest, tags, created_at=start + timedelta(minutes=minute))
        digests.append(digest)
    for service in FRONTEND:
        github.push(NAMESPACE, f"{PREFIX}{service}", await world.seed(service, ["staging-latest"]), ["staging-latest"])

    dry = await flows.prune(
        config,
        keep=1,
        apply=False,
        owner_type="org",
        credentials=world.credentials(),
        options=world.options(github_api_url=github.url),
    )

    assert listed(dry, package, "would delete") == {short(digests[1])}
    assert "staging-latest" in dry.notes[0]
