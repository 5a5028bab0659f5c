"""Tests for pipeline.promote: staging's exact digests onto production's tags, verified, then deployed.

Images live in a real registry (Debian's docker-registry); the production groups deploy on the Dokploy
double, gated on the VPS double.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline import flows
from pipeline.config import Config
from pipeline.errors import ConfigError, DokployAuthError, UsageError
from pipeline.run import Credentials
from pipeline.secret import SecretValue
from pipeline.summary import RunSummary, render_text
from pipeline.tags import short_digest as short
from tests.support.dokploy_double import BACKEND_ID, FRONTEND_ID
from tests.support.world import (
    BACKEND_PROD_ID,
    FRONTEND_PROD_ID,
    SERVICES,
    SHA,
    SHORT,
    World,
    pinned_env,
    rows,
    tags_of,
)

FRONTEND = ("bizoholic-frontend", "client-portal")


async def promote(
    world: World,
    *,
    config: Config | None = None,
    services: list[str] | None = None,
    dokploy_key: bool = True,
    credentials: Credentials | None = None,
    deploy: bool = True,
) -> RunSummary:
    """Promote staging to production in ``world``, with the test's few differences."""
    return await flows.promote(
        config or world.config(),
        source_env="staging",
        target_env="production",
        services=services,
        credentials=credentials or world.credentials(dokploy_key=dokploy_key),
        options=world.options(),
        deploy=deploy,
    )


async def test_promote_copies_staging_digests_to_production_tags_and_deploys_them(world):
    """Production's tags name staging's exact digests, and production's composes run them, healthy."""
    staged = {s: await world.seed(s, ["staging", f"staging-{SHORT}"]) for s in SERVICES}
    world.stage(staged)
    staging_env = world.env(BACKEND_ID)

    summary = await promote(world)

    assert summary.ok, render_text(summary)
    assert summary.environment == "production"
    by_service = rows(summary)
    for service in SERVICES:
        for tag in ("prod", f"prod-{SHORT}"):
            assert (await world.client.resolve(world.repository(service), tag)).digest == staged[service]
        row = by_service[service]
        assert (row.change, row.digest, row.tags) == ("promoted", staged[service], ("prod", f"prod-{SHORT}"))
        assert (row.deploy_status, row.health, row.rolled_back) == ("done", "passed", "no")
    pins = {s: f"{world.image(s)}@{staged[s]}" for s in SERVICES}
    assert world.env(BACKEND_PROD_ID) == pinned_env(
        world.envs[BACKEND_PROD_ID], world, {"brain-gateway": pins["brain-gateway"]}, "production"
    )
    assert world.env(FRONTEND_PROD_ID) == pinned_env(
        world.envs[FRONTEND_PROD_ID], world, {s: pins[s] for s in FRONTEND}, "production"
    )
    assert world.env(BACKEND_ID) == staging_env
    assert world.dokploy.double.history(BACKEND_ID) == []
    assert [r.status for r in world.dokploy.double.history(FRONTEND_PROD_ID)] == ["done"]


@pytest.mark.parametrize("problem", ["missing", "dirty"])
async def test_promote_refuses_before_moving_any_tag(world, problem):
    """A missing staging image, or one built from a dirty tree, is named, and no service gets a production tag."""
    staged = {s: await world.seed(s, ["staging", f"staging-{SHORT}"]) for s in SERVICES[:2]}
    if problem == "dirty":
        staged["client-portal"] = await world.seed("client-portal", ["staging"], revision=f"{SHA}-dirty")
    world.stage(staged)

    with pytest.raises(UsageError) as caught:
        await promote(world)

    message = str(caught.value)
    if problem == "missing":
        assert message == (
            f"cannot promote client-portal: staging's compose {FRONTEND_ID} runs "
            f"{world.old_reference('client-portal')}, which is not an image of {world.image('client-portal')} "
            "in the registry; deploy staging with this pipeline first"
        )
    else:
        assert message.startswith(
            f"cannot promote client-portal: {world.image('client-portal')}@{staged['client-portal']} was built "
            f"from uncommitted changes ({SHA}-dirty)"
        )
    for service in SERVICES:
        assert [t for t in await tags_of(world.client, world.repository(service)) if t.startswith("prod")] == []
    assert world.writes() == []


async def test_promote_reads_a_moving_tag_that_names_the_branch(world):
    """Staging's moving tag is '{branch}-latest': promote resolves staging-latest; --no-deploy only moves tags."""
    config = world.write_config(staging_tags=("{branch}-latest", "{branch}-{sha}"))
    staged = {s: await world.seed(s, ["staging-latest"]) for s in SERVICES}

    summary = await promote(
        world, config=config, services=["client-portal", "brain-gateway"], dokploy_key=False, deploy=False
    )

    assert summary.ok, render_text(summary)
    assert [o.service for o in summary.outcomes] == ["brain-gateway", "client-portal"]
    assert (
        f"client-portal: promoted what {world.image('client-portal')}:staging-latest names "
        "(no --dokploy-key to read what runs)"
    ) in summary.notes
    for service in ("brain-gateway", "client-portal"):
        assert (await world.client.resolve(world.repository(service), f"prod-{SHORT}")).digest == staged[service]
    assert "prod" not in await tags_of(world.client, world.repository("bizoholic-frontend"))
    assert world.dokploy.double.requests == []
    assert {o.deploy_status for o in summary.outcomes} == {"not deployed"}


@pytest.mark.parametrize("problem", ["wrong key", "no image variable"])
async def test_promote_checks_dokploy_before_moving_any_tag(world, problem):
    """A key Dokploy refuses, or a compose without the image variable, stops promote with no production tag moved."""
    world.stage({s: await world.seed(s, ["staging", f"staging-{SHORT}"]) for s in SERVICES})
    credentials = world.credentials()
    if problem == "wrong key":
        credentials = replace(credentials, dokploy_key=SecretValue("DOKPLOY_API_KEY", "dk_wrong_key_Zq"))
        expected: type[Exception] = DokployAuthError
    else:
        record = world.dokploy.double.composes[FRONTEND_PROD_ID]
        record.env = world.env(FRONTEND_PROD_ID).replace("CLIENT_PORTAL_IMAGE", "PORTAL_IMAGE")
        expected = ConfigError

    with pytest.raises(expected):
        await promote(world, credentials=credentials)

    for service in SERVICES:
        assert [t for t in await tags_of(world.client, world.repository(service)) if t.startswith("prod")] == []
    assert [procedure for procedure, _ in world.writes()] == []


async def test_promote_notes_say_nothing_about_a_source_it_does_not_take(world):
    """promote has no --source: its summary must not tell people to pass one."""
    for service in SERVICES:
        await world.seed(service, ["staging", f"staging-{SHORT}"])

    summary = await promote(world, services=["brain-gateway"], dokploy_key=False, deploy=False)

    assert summary.ok, render_text(summary)
    assert not [n for n in summary.notes if "--source" in n]


async def test_promote_takes_what_staging_runs_not_a_tag_that_moved_past_it(world):
    """A build published to staging whose deploy failed owns the staging tag; production gets what runs."""
    running = {s: await world.seed(s, ["staging", f"staging-{SHORT}"]) for s in SERVICES}
    world.stage(running)
    failed = await world.seed("brain-gateway", ["staging"], payload=b"a build whose deploy was rolled back")

    summary = await promote(world, services=["brain-gateway"], deploy=False)

    assert summary.ok, render_text(summary)
    assert (await world.client.resolve(world.repository("brain-gateway"), "prod")).digest == running["brain-gateway"]
    assert (
        f"brain-gateway: promoted what staging runs ({short(running['brain-gateway'])}), not what staging names "
        f"({short(failed)}, published but not running there)"
    ) in summary.notes
    assert [procedure for procedure, _ in world.writes()] == []


async def test_promote_refuses_a_staging_target_that_pins_nothing(world):
    """An image variable missing from staging's compose means nothing of ours runs there: nothing moves."""
    world.stage({s: await world.seed(s, ["staging"]) for s in SERVICES})
    record = world.dokploy.double.composes[BACKEND_ID]
    record.env = "\n".join(line for line in record.env.splitlines() if "BRAIN_GATEWAY_IMAGE=" not in line)

    with pytest.raises(UsageError, match=f"staging's compose {BACKEND_ID} pins no image for it; deploy staging first"):
        await promote(world)
    for service in SERVICES:
        assert [t for t in await tags_of(world.client, world.repository(service)) if t.startswith("prod")] == []


async def test_promote_refuses_a_running_digest_the_registry_no_longer_has(world):
    """Staging runs a digest that was deleted from the registry: named, and nothing moves."""
    staged = {s: await world.seed(s, ["staging"]) for s in SERVICES}
    staged["brain-gateway"] = "sha256:" + "0" * 64
    world.stage(staged)

    with pytest.raises(UsageError) as caught:
        await promote(world)

    assert str(caught.value).startswith(
        f"cannot promote brain-gateway: staging's compose {BACKEND_ID} runs {world.image('brain-gateway')}@"
        f"{staged['brain-gateway']}, which is not an image of {world.image('brain-gateway')} in the registry"
    )
    for service in SERVICES:
        assert [t for t in await tags_of(world.client, world.repository(service)) if t.startswith("prod")] == []


async def test_promote_without_a_key_needs_the_staging_tag(world):
    """No --dokploy-key: the tag is the only source, and a missing one is named with the fix."""
    await world.seed("brain-gateway", ["staging"])

    with pytest.raises(UsageError) as caught:
        await promote(world, services=["brain-gateway", "client-portal"], dokploy_key=False, deploy=False)

    assert str(caught.value) == (
        f"cannot promote client-portal: {world.image('client-portal')}:staging does not exist; deploy staging first"
    )


async def test_promote_takes_the_tag_for_a_group_without_a_staging_target(world):
    """A group with no target in the source environment has nothing to read: the tag it is, said in the notes."""
    text = world.config_path.read_text()
    start = text.index('[groups.targets.staging]\ncompose_id = "frnt')
    end = text.index("[groups.targets.production]", start)
    world.config_path.write_text(text[:start] + text[end:])
    staged = {s: await world.seed(s, ["staging"]) for s in SERVICES}
    world.stage({"brain-gateway": staged["brain-gateway"]})

    summary = await promote(world, deploy=False)

    assert summary.ok, render_text(summary)
    assert (
        f"client-portal: promoted what {world.image('client-portal')}:staging names "
        "(staging has no Dokploy target for it to read what runs)"
    ) in summary.notes
    assert not [n for n in summary.notes if n.startswith("brain-gateway:")]
    assert (await world.client.resolve(world.repository("client-portal"), "prod")).digest == staged["client-portal"]
