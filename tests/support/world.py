"""A whole BizOSaaS world on loopback, for the flow and CLI tests.

``World`` ties together the real local registry, the Dokploy double, the VPS
double and a source tree in ``tmp_path``: its services.toml names the registry
as ``[registry] host`` (``127.0.0.1:PORT``), the double as ``[dokploy] url`` and
health URLs on the VPS, for a staging and a production environment. The
composes in the double carry the seed's env strings (comments, quotes, CRLF)
rewritten to the local registry, so pinning can be checked byte for byte.

``push_labelled`` pushes a synthetic image whose config carries labels (the
``org.opencontainers.image.revision`` label promote reads); ``FakeEngine`` is an
``ImageEngine`` that records its calls and publishes such images for real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pipeline import config as config_module
from pipeline.config import Config
from pipeline.errors import BuildError, ManifestNotFoundError
from pipeline.flows import Credentials, Options
from pipeline.gitinfo import GitContext
from pipeline.images import TestReport
from pipeline.plan import Plan, ServicePlan, make_plan
from pipeline.registry import OCI_MANIFEST, Manifest, RegistryClient, sha256_digest
from pipeline.secret import SecretValue
from pipeline.summary import RunSummary, ServiceOutcome, render_markdown, render_text, to_json
from tests.support.dokploy_double import (
    ADMIN_KEY,
    BACKEND_ENV,
    BACKEND_FILE,
    BACKEND_ID,
    FRONTEND_ENV,
    FRONTEND_FILE,
    FRONTEND_ID,
    IMAGE_PREFIX,
    OLD_TAG,
    RunningDokploy,
    RunningVps,
)
from tests.support.images import layer
from tests.support.registry import RunningRegistry, loopback_http

SHA = "5e1f0c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
SHORT = SHA[:7]
NAMESPACE = "bizoholic-digital"
PREFIX = "bizosaas-"
SERVICES = ("brain-gateway", "bizoholic-frontend", "client-portal")
BACKEND_PROD_ID = "bkndCompose0product1"
FRONTEND_PROD_ID = "frntCompose0product1"
OLD_PROD_TAG = "prod-0000000"
REGISTRY_TOKEN = "regtok-Qm7vX2pL9sK4wZ8"
REVISION_LABEL = "org.opencontainers.image.revision"
POLL_S = 0.005
HEALTH_TIMEOUT_S = 0.5

CONTEXTS = {
    "brain-gateway": ("bizosaas/ai/services/bizosaas-brain", "Dockerfile"),
    "bizoholic-frontend": ("bizosaas/frontend/apps/bizoholic-frontend", "Dockerfile.production"),
    "client-portal": ("bizosaas/frontend/apps/client-portal", "Dockerfile"),
}
VARIABLES = {
    "brain-gateway": "BRAIN_GATEWAY_IMAGE",
    "bizoholic-frontend": "BIZOHOLIC_FRONTEND_IMAGE",
    "client-portal": "CLIENT_PORTAL_IMAGE",
}


def services_toml(
    *,
    registry_host: str,
    dokploy_url: str,
    vps_url: str,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    notify_on: Iterable[str] = ("failure",),
    frontend_in_production: bool = True,
    staging_tags: Iterable[str] = ("staging", "staging-{sha}"),
) -> str:
    """services.toml for three services in two groups, staging and production, all on loopback."""
    frontend_production = (
        f"""
[groups.targets.production]
compose_id = "{FRONTEND_PROD_ID}"
[[groups.targets.production.health]]
url = "{vps_url}/production/bizoholic/health"
timeout = {health_timeout_s}
[[groups.targets.production.health]]
url = "{vps_url}/production/portal/health"
timeout = {health_timeout_s}
"""
        if frontend_in_production
        else ""
    )
    return f"""
[registry]
host = "{registry_host}"
namespace = "{NAMESPACE}"
image_prefix = "{PREFIX}"

[dokploy]
url = "{dokploy_url}"

[notify]
on = {json.dumps(list(notify_on))}

[environments.staging]
branch = "staging"
tags = {json.dumps(list(staging_tags))}

[environments.production]
branch = "main"
tags = ["prod", "prod-{{sha}}"]

[services.brain-gateway]
context = "{CONTEXTS["brain-gateway"][0]}"
test = {{ command = ["pytest", "-q"] }}

[services.bizoholic-frontend]
context = "{CONTEXTS["bizoholic-frontend"][0]}"
dockerfile = "{CONTEXTS["bizoholic-frontend"][1]}"

[services.client-portal]
context = "{CONTEXTS["client-portal"][0]}"
smoke = {{ port = 3000, path = "/" }}

[[groups]]
name = "backend"
services = ["brain-gateway"]
[groups.targets.staging]
compose_id = "{BACKEND_ID}"
[[groups.targets.staging.health]]
url = "{vps_url}/staging/backend/health"
contains = "ok"
timeout = {health_timeout_s}
[groups.targets.production]
compose_id = "{BACKEND_PROD_ID}"
[[groups.targets.production.health]]
url = "{vps_url}/production/backend/health"
timeout = {health_timeout_s}

[[groups]]
name = "frontend"
services = ["bizoholic-frontend", "client-portal"]
[groups.targets.staging]
compose_id = "{FRONTEND_ID}"
[[groups.targets.staging.health]]
url = "{vps_url}/staging/bizoholic/health"
timeout = {health_timeout_s}
[[groups.targets.staging.health]]
url = "{vps_url}/staging/portal/health"
timeout = {health_timeout_s}
{frontend_production}"""


def write_sources(root: Path) -> None:
    """The service contexts and Dockerfiles services.toml names, with a little code in each."""
    for name, (context, dockerfile) in CONTEXTS.items():
        directory = root / context
        directory.mkdir(parents=True, exist_ok=True)
        (directory / dockerfile).write_text('FROM python:3.12-slim AS runtime\nCOPY . /app\nCMD ["/app/run"]\n')
        (directory / "app.py").write_text(f"print('hello from {name}')\n")


# -- images with labels --------------------------------------------------------


async def push_labelled(
    client: RegistryClient,
    repo: str,
    tag: str | None,
    *,
    labels: Mapping[str, str],
    payload: bytes = b"a labelled test image\n",
) -> str:
    """Push a one-layer OCI image whose config carries ``labels``; return its digest."""
    blob, diff_id = layer(payload)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/app/run"], "Labels": dict(labels)},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "tests.support.world"}],
        },
        indent=2,
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(blob),
                "size": len(blob),
            }
        ],
    }
    await client.push_blob(repo, blob)
    await client.push_blob(repo, config)
    built = Manifest.from_bytes(json.dumps(manifest, indent=2).encode(), OCI_MANIFEST)
    return await client.put_manifest(repo, tag or built.digest, built)


async def tags_of(client: RegistryClient, repo: str) -> list[str]:
    """A repository's tags; none when the repository does not exist yet."""
    try:
        return await client.tags(repo)
    except ManifestNotFoundError:
        return []


# -- the engine ----------------------------------------------------------------


class FakeEngine:
    """An ImageEngine that records calls; publish pushes a labelled image to the real registry.

    ``build_errors`` fails the build of the services named, as a Dagger build
    does; ``on_publish(plan, pinned_reference)`` runs after each push, e.g. to
    mark the new image bad on the VPS.
    """

    def __init__(
        self,
        client: RegistryClient | None,
        *,
        build_errors: Mapping[str, BuildError] | None = None,
        on_publish: Callable[[ServicePlan, str], None] | None = None,
    ) -> None:
        self.client = client
        self.build_errors = dict(build_errors or {})
        self.on_publish = on_publish
        self.calls: list[tuple[str, str]] = []

    async def build(self, plan: ServicePlan) -> str:
        self.calls.append(("build", plan.name))
        if plan.name in self.build_errors:
            raise self.build_errors[plan.name]
        return f"{plan.name} built from {plan.content_key}"

    async def test(self, plan: ServicePlan, built: str) -> TestReport:
        self.calls.append(("test", plan.name))
        return TestReport()

    async def smoke(self, plan: ServicePlan, built: str) -> None:
        self.calls.append(("smoke", plan.name))

    async def publish(self, plan: ServicePlan, built: str, address: str) -> str:
        self.calls.append(("publish", address))
        assert self.client is not None, "this engine was made without a registry to publish to"
        tag = address.rpartition(":")[2]
        digest = await push_labelled(self.client, plan.repository, tag, labels=plan.labels, payload=built.encode())
        if self.on_publish is not None:
            self.on_publish(plan, f"{plan.image}@{digest}")
        return f"{address}@{digest}"

    def published(self) -> list[str]:
        return [address for step, address in self.calls if step == "publish"]


# -- the world -----------------------------------------------------------------


@dataclass
class World:
    """The doubles, the registry, a source tree with services.toml, and helpers over them."""

    root: Path
    registry_host: str
    dokploy: RunningDokploy
    vps: RunningVps
    client: RegistryClient
    envs: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "services.toml"

    @property
    def prefix(self) -> str:
        """``127.0.0.1:PORT/bizoholic-digital/bizosaas-``: what image names start with."""
        return f"{self.registry_host}/{NAMESPACE}/{PREFIX}"

    def image(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def repository(self, service: str) -> str:
        return f"{NAMESPACE}/{PREFIX}{service}"

    def write_config(self, **options: object) -> Config:
        """(Re)write services.toml with ``services_toml`` options; return it loaded."""
        text = services_toml(
            registry_host=self.registry_host,
            dokploy_url=self.dokploy.url,
            vps_url=self.vps.url,
            **options,  # type: ignore[arg-type]
        )
        self.config_path.write_text(text)
        return config_module.load(self.config_path)

    def config(self) -> Config:
        return config_module.load(self.config_path)

    def plan(self, environment: str = "staging", *, config: Config | None = None, services: object = None) -> Plan:
        """The plan for this commit, with content keys from the source tree."""
        git = GitContext(branch="main" if environment == "production" else environment, sha=SHA, event="push")
        return make_plan(
            config or self.config(),
            git,
            environment=environment,
            services=services,  # type: ignore[arg-type]
            source=self.root,
        )

    def credentials(self, *, registry_token: bool = True, dokploy_key: bool = True, webhook: str = "") -> Credentials:
        return Credentials(
            registry_user="pusher",
            registry_token=SecretValue("GITHUB_TOKEN", REGISTRY_TOKEN) if registry_token else None,
            dokploy_key=self.dokploy.secret if dokploy_key else None,
            notify_webhook=SecretValue("SLACK_WEBHOOK_URL", webhook) if webhook else None,
        )

    @staticmethod
    def options(**changes: object) -> Options:
        """Options with tiny waits, so tests never sleep for long."""
        return Options(poll_interval_s=POLL_S, deploy_timeout_s=5.0, **changes)  # type: ignore[arg-type]

    def env(self, compose_id: str) -> str:
        value = self.dokploy.double.env(compose_id)
        assert value is not None
        return value

    def writes(self) -> list[tuple[str, object]]:
        """Every POST the Dokploy double received: (procedure, body)."""
        return [(r.procedure, r.body) for r in self.dokploy.double.requests if r.method == "POST"]

    def old_reference(self, service: str, environment: str = "staging") -> str:
        return f"{self.image(service)}:{OLD_TAG if environment == 'staging' else OLD_PROD_TAG}"

    def stage(self, digests: dict[str, str]) -> None:
        """Make staging's composes pin ``digests`` (service -> digest), as a staging deploy leaves them."""
        for compose_id, services in ((BACKEND_ID, ("brain-gateway",)), (FRONTEND_ID, SERVICES[1:])):
            pins = {s: f"{self.image(s)}@{digests[s]}" for s in services if s in digests}
            self.dokploy.double.composes[compose_id].env = pinned_env(self.envs[compose_id], self, pins)

    async def seed(
        self, service: str, tags: Iterable[str], *, revision: str = SHA, payload: bytes | None = None
    ) -> str:
        """Publish an image of ``service`` under ``tags`` with a revision label; return its digest."""
        tags = list(tags)
        body = payload or f"{service} at {revision}".encode()
        digest = await push_labelled(
            self.client, self.repository(service), tags[0], labels={REVISION_LABEL: revision}, payload=body
        )
        if tags[1:]:
            await self.client.copy_tag(self.repository(service), tags[0], tags[1:])
        return digest


def install(world: World, *, durations_s: float | None = None) -> None:
    """Create the staging and production composes in the double and their health routes on the VPS."""
    double, vps = world.dokploy.double, world.vps.vps
    # As on a real Dokploy, a job is taken ("active") a moment before its row exists.
    double.row_delay_s = 0.005
    local = world.prefix
    envs = {
        BACKEND_ID: BACKEND_ENV.replace(IMAGE_PREFIX, local),
        FRONTEND_ID: FRONTEND_ENV.replace(IMAGE_PREFIX, local),
        BACKEND_PROD_ID: BACKEND_ENV.replace(IMAGE_PREFIX, local)
        .replace(OLD_TAG, OLD_PROD_TAG)
        .replace("(staging)", "(production)"),
        FRONTEND_PROD_ID: FRONTEND_ENV.replace(IMAGE_PREFIX, local).replace(OLD_TAG, OLD_PROD_TAG),
    }
    files = {BACKEND_ID: BACKEND_FILE, FRONTEND_ID: FRONTEND_FILE}
    files |= {BACKEND_PROD_ID: BACKEND_FILE, FRONTEND_PROD_ID: FRONTEND_FILE}
    names = {
        BACKEND_ID: "bizosaas-backend",
        FRONTEND_ID: "bizosaas-frontend",
        BACKEND_PROD_ID: "bizosaas-backend-prod",
        FRONTEND_PROD_ID: "bizosaas-frontend-prod",
    }
    for compose_id, env in envs.items():
        double.add_compose(
            compose_id=compose_id, name=names[compose_id], env=env, compose_file=files[compose_id], status="done"
        )
        double.set_duration(compose_id, 0.02 if durations_s is None else durations_s)
    world.envs = envs
    for environment, backend, frontend in (
        ("staging", BACKEND_ID, FRONTEND_ID),
        ("production", BACKEND_PROD_ID, FRONTEND_PROD_ID),
    ):
        vps.serve(f"/{environment}/backend/health", service_id=backend, variable="BRAIN_GATEWAY_IMAGE")
        vps.serve(f"/{environment}/bizoholic/health", service_id=frontend, variable="BIZOHOLIC_FRONTEND_IMAGE")
        vps.serve(f"/{environment}/portal/health", service_id=frontend, variable="CLIENT_PORTAL_IMAGE")


def make_world(
    root: Path,
    *,
    registry_host: str,
    dokploy: RunningDokploy,
    vps: RunningVps,
    http: httpx.AsyncClient,
    durations_s: float | None = None,
    **config_options: object,
) -> World:
    """A source tree in ``root`` with services.toml, and the doubles set up to match it."""
    root.mkdir(parents=True, exist_ok=True)
    write_sources(root)
    world = World(
        root=root,
        registry_host=registry_host,
        dokploy=dokploy,
        vps=vps,
        client=RegistryClient(http, registry=registry_host),
    )
    world.write_config(**config_options)
    install(world, durations_s=durations_s)
    return world


# -- fixtures and checks shared by the flow tests -----------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


@pytest.fixture
async def world(
    tmp_path: Path, registry: RunningRegistry, dokploy: RunningDokploy, vps: RunningVps, http: httpx.AsyncClient
) -> World:
    return make_world(tmp_path / "repo", registry_host=registry.host, dokploy=dokploy, vps=vps, http=http)


def rendered(summary: RunSummary) -> str:
    """Every rendering of a summary, for checks that hold for all of them."""
    return render_text(summary) + render_markdown(summary) + to_json(summary)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert ADMIN_KEY not in text
        assert REGISTRY_TOKEN not in text


def rows(summary: RunSummary) -> dict[str, ServiceOutcome]:
    return {o.service: o for o in summary.outcomes}


def pinned_env(original: str, world: World, pins: dict[str, str], environment: str = "staging") -> str:
    """``original`` with each service's old reference replaced by its pin, every other byte kept."""
    for service, reference in pins.items():
        old = world.old_reference(service, environment)
        assert original.count(old) == 1
        original = original.replace(old, reference)
    return original
