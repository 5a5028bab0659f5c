"""What a Dokploy target runs: the image reference pinned for each service of its group.

``deploy`` writes these pins; ``status`` shows them, ``prune`` protects them and
``promote`` copies them. A compose pins one variable per service in its env; a
docker-image application runs one image for its whole group.
"""

from __future__ import annotations

from pipeline import envfile
from pipeline.config import Config, DokployTarget, Group
from pipeline.dokploy import Application, Compose, DokployClient
from pipeline.errors import ManifestNotFoundError
from pipeline.registry import RegistryClient


def compose_pins(config: Config, group: Group, compose: Compose) -> dict[str, str]:
    """Each service's pinned reference in the compose's env ("" when its variable is unset)."""
    values = envfile.values(compose.env)
    return {s: values.get(config.services[s].image_variable, "") for s in group.services}


def application_pins(group: Group, application: Application) -> dict[str, str]:
    """The application's image, for every service of its group."""
    return dict.fromkeys(group.services, application.docker_image)


async def read_pins(client: DokployClient, config: Config, group: Group, target: DokployTarget) -> dict[str, str]:
    """Each service's pinned reference, read from Dokploy now."""
    if target.kind == "compose":
        return compose_pins(config, group, await client.compose(target.id))
    return application_pins(group, await client.application(target.id))


async def digest_of(registry: RegistryClient, config: Config, ref: str) -> str:
    """The digest a pinned reference names: a digest as it is, a tag of our registry resolved, else ""."""
    if "@" in ref:
        return ref.split("@", 1)[1]
    prefix = config.registry.host + "/"
    if not ref.startswith(prefix) or ":" not in ref.removeprefix(prefix):
        return ""
    repository, tag = ref.removeprefix(prefix).rsplit(":", 1)
    try:
        return (await registry.resolve(repository, tag)).digest
    except ManifestNotFoundError:
        return ""
