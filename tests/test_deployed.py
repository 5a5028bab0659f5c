"""Tests for pipeline.deployed: what a Dokploy target pins, and the digest each pin names.

Pins are read from the Dokploy double over HTTP; tags resolve in a real registry.
"""

from __future__ import annotations

from pipeline.deployed import digest_of, read_pins
from tests.support.dokploy_double import BACKEND_ID, FRONTEND_ID
from tests.support.images import push_image
from tests.support.world import SERVICES


async def test_a_compose_pins_each_service_by_its_variable_and_unset_is_empty(world, http):
    """Each service's variable is read from the env as deploy writes it; a missing one reads as ""."""
    digests = {s: await push_image(world.client, world.repository(s), "staging", payload=s.encode()) for s in SERVICES}
    world.stage({s: digests[s] for s in SERVICES[1:]})
    config = world.config()
    client = world.dokploy.client(http)
    groups = {g.name: g for g in config.groups}
    frontend, backend = groups["frontend"], groups["backend"]
    assert (frontend.targets["staging"].id, backend.targets["staging"].id) == (FRONTEND_ID, BACKEND_ID)

    assert await read_pins(client, config, frontend, frontend.targets["staging"]) == {
        s: f"{world.image(s)}@{digests[s]}" for s in SERVICES[1:]
    }
    record = world.dokploy.double.composes[BACKEND_ID]
    record.env = "\n".join(line for line in record.env.splitlines() if "BRAIN_GATEWAY_IMAGE=" not in line)
    assert await read_pins(client, config, backend, backend.targets["staging"]) == {"brain-gateway": ""}


async def test_digest_of_takes_digests_as_they_are_and_resolves_our_tags(world):
    """A digest pin names itself; a tag of our registry is resolved; anything else names nothing."""
    config = world.config()
    repository = world.repository("brain-gateway")
    digest = await push_image(world.client, repository, "v1")
    image = world.image("brain-gateway")

    assert await digest_of(world.client, config, f"{image}@{digest}") == digest
    assert await digest_of(world.client, config, f"{image}:v1") == digest
    assert await digest_of(world.client, config, f"{image}:never-pushed") == ""
    assert await digest_of(world.client, config, "ghcr.io/saleor/saleor:3.20") == ""
    assert await digest_of(world.client, config, image) == ""
