"""Dagger recipes that build and publish a service's image, and the engine that runs them.

The recipes are thin on purpose: each turns a ``ServicePlan`` into a lazy Dagger
chain, so tests check the query they build without an engine.

* Only the service's context directory is the build context, and the Dockerfile
  path is relative to it, as with ``docker build -f``. Dagger applies the
  context's ``.dockerignore`` (or ``<Dockerfile>.dockerignore``) itself.
* Dockerfile ``RUN --mount=type=secret,id=X`` needs a secret *named* X, and secrets
  from providers (``env://``, ``op://``...) have no name, so each declared secret
  is read and re-wrapped with ``dag.set_secret(X, ...)``.
* One container is built per platform; several become one multi-platform index.
* With registry credentials, they are registered before the first build, so a
  Dockerfile can start ``FROM`` a private image of the same registry: Dagger keeps
  registry auth session-wide, but only once a chain that adds it is evaluated.
* ``publish`` pushes one address. The other tags are copied by the registry
  client (``pipeline.images``), so every tag provably names the same digest.

``DaggerImageEngine`` wires these and ``pipeline.checks`` into the
``pipeline.images.ImageEngine`` the per-service flow drives.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import dagger
from dagger import dag

from pipeline.checks import DEFAULT_PROBER_IMAGE, run_smoke, run_tests
from pipeline.config import Service
from pipeline.errors import MissingSecretError, PublishError, UsageError
from pipeline.images import TestReport
from pipeline.plan import ServicePlan
from pipeline.progress import one_line

_DETAIL_LIMIT = 500


def build_container(
    source: dagger.Directory,
    plan: ServicePlan,
    *,
    platform: str | None = None,
    secrets: Sequence[dagger.Secret] = (),
    target: str | None = None,
) -> dagger.Container:
    """The service's image for one platform, labelled; ``target`` overrides the Dockerfile stage."""
    service = plan.service
    container = source.directory(service.context).docker_build(
        dockerfile=service.dockerfile,
        target=service.target if target is None else target,
        build_args=[dagger.BuildArg(name=name, value=value) for name, value in service.build_args.items()],
        platform=dagger.Platform(platform) if platform else None,
        secrets=list(secrets),
    )
    for name, value in plan.labels.items():
        container = container.with_label(name, value)
    return container


async def named_build_secrets(
    service: Service, *, client: dagger.Client = dag, given: Mapping[str, dagger.Secret] | None = None
) -> list[dagger.Secret]:
    """Each declared build secret, read from its source and named by its Dockerfile id.

    In library mode (``given`` is None) each source URI is resolved where this
    process runs. Inside a module it would resolve in the runtime container, not
    on the caller's machine, so there the caller passes the secrets as arguments
    (``given``, keyed by their URI) and a missing one is an error naming the flag.
    """
    named = []
    for secret_id, uri in service.secrets.items():
        if given is not None and uri not in given:
            raise MissingSecretError(
                f"{service.name}: build secret '{secret_id}' comes from {uri}: pass --build-secrets={uri} "
                "(dagger call reads secrets on your machine only when they are arguments)"
            )
        source = given[uri] if given is not None else client.secret(uri)
        try:
            plaintext = await source.plaintext()
        except dagger.QueryError as e:
            raise MissingSecretError(_unreadable(service.name, secret_id, uri, e)) from None
        named.append(client.set_secret(secret_id, plaintext))
    return named


async def secrets_by_uri(secrets: Sequence[dagger.Secret] | None) -> dict[str, dagger.Secret]:
    """Secrets passed as module arguments, keyed by the URI they were given as (env://NPM_TOKEN)."""
    return {await secret.uri(): secret for secret in secrets or ()}


def _unreadable(service: str, secret_id: str, uri: str, error: dagger.QueryError) -> str:
    reason = one_line(str(error))
    if uri.startswith("env://"):
        variable = uri.removeprefix("env://")
        fix = f"set the environment variable {variable} where dagger runs (in Actions: the step's env)"
    else:
        fix = f"make {uri} readable where dagger runs, or change services.{service}.secrets.{secret_id}"
    return f"{service}: build secret '{secret_id}' comes from {uri}, which could not be read ({reason}); {fix}"


def build_variants(
    source: dagger.Directory, plan: ServicePlan, secrets: Sequence[dagger.Secret]
) -> list[dagger.Container]:
    """One container per platform the service declares, in that order."""
    return [build_container(source, plan, platform=p, secrets=secrets) for p in plan.service.platforms]


def publish_container(
    variants: Sequence[dagger.Container],
    *,
    registry: str,
    username: str = "",
    token: dagger.Secret | None = None,
    client: dagger.Client = dag,
) -> tuple[dagger.Container, list[dagger.Container]]:
    """The container to call ``publish`` on, with registry auth, and its platform variants."""
    if not variants:
        raise UsageError("nothing to publish: the service declares no platforms")
    if len(variants) == 1:
        container, platform_variants = variants[0], []
    else:
        # An empty container carrying the variants publishes one multi-platform index.
        container, platform_variants = client.container(), list(variants)
    if token is not None:
        container = container.with_registry_auth(registry, username or "token", token)
    return container, platform_variants


async def publish(
    variants: Sequence[dagger.Container],
    address: str,
    *,
    service: str,
    registry: str,
    username: str = "",
    token: dagger.Secret | None = None,
    client: dagger.Client = dag,
) -> str:
    """Push the image to ``address``; return ``address@sha256:...``."""
    container, platform_variants = publish_container(
        variants, registry=registry, username=username, token=token, client=client
    )
    try:
        return await container.publish(address, platform_variants=platform_variants)
    except dagger.DaggerError as e:
        detail = one_line(str(e))[:_DETAIL_LIMIT] or type(e).__name__
        raise PublishError(service, address, detail) from e


def native_platform(platforms: Sequence[str], engine_platform: str) -> str:
    """The declared platform the engine runs without emulation, else the first one."""
    if engine_platform in platforms:
        return engine_platform
    # "linux/arm64" matches "linux/arm64/v8": the variant does not change what runs.
    os_arch = "/".join(engine_platform.split("/")[:2])
    return next((p for p in platforms if "/".join(p.split("/")[:2]) == os_arch), platforms[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    """A service's image built for every platform; tests and smoke checks use ``native``."""

    variants: tuple[dagger.Container, ...]
    native: dagger.Container
    native_platform: str
    secrets: tuple[dagger.Secret, ...]


class DaggerImageEngine:
    """Builds, tests, smoke-checks and publishes images with Dagger (an ``ImageEngine``)."""

    def __init__(
        self,
        source: dagger.Directory,
        *,
        registry_user: str = "",
        token: dagger.Secret | None = None,
        prober_image: str = DEFAULT_PROBER_IMAGE,
        reports_dir: Path | None = None,
        build_secrets: Mapping[str, dagger.Secret] | None = None,
        client: dagger.Client = dag,
    ) -> None:
        self._source = source
        self._reports_dir = reports_dir
        self._build_secrets = build_secrets
        self._username = registry_user
        self._token = token
        self._prober_image = prober_image
        self._client = client
        self._engine_platform = ""
        self._pull_auth_lock = anyio.Lock()
        self._pull_auth_hosts: set[str] = set()

    async def build(self, plan: ServicePlan) -> Built:
        """Build every platform and wait for it, so a broken build fails the build step."""
        await self._register_pull_auth(plan.registry)
        secrets = await named_build_secrets(plan.service, client=self._client, given=self._build_secrets)
        variants = build_variants(self._source, plan, secrets)
        if not self._engine_platform:
            self._engine_platform = str(await self._client.default_platform())
        native = native_platform(plan.service.platforms, self._engine_platform)
        async with anyio.create_task_group() as group:
            for variant in variants:
                group.start_soon(variant.sync)
        return Built(
            variants=tuple(variants),
            native=variants[plan.service.platforms.index(native)],
            native_platform=native,
            secrets=tuple(secrets),
        )

    async def _register_pull_auth(self, registry: str) -> None:
        """Once per registry host, evaluate a chain that adds the credentials, if we have any."""
        if self._token is None:
            return
        async with self._pull_auth_lock:
            if registry in self._pull_auth_hosts:
                return
            # An unset repository secret arrives empty: registering it would turn
            # anonymous pulls of public base images into failed logins.
            if await self._token.plaintext():
                # The user name as publish() gives it: GHCR checks only the token.
                username = self._username or "token"
                await self._client.container().with_registry_auth(registry, username, self._token).sync()
            self._pull_auth_hosts.add(registry)

    async def test(self, plan: ServicePlan, built: Built) -> TestReport:
        """Run the tests in the native image, or in the test stage built beside it."""
        spec = plan.service.test
        stage = None
        if spec is not None and spec.stage:
            stage = build_container(
                self._source, plan, platform=built.native_platform, secrets=built.secrets, target=spec.stage
            )
        return await run_tests(plan, built=built.native, stage=stage, run_id=uuid.uuid4().hex, client=self._client)

    async def smoke(self, plan: ServicePlan, built: Built) -> None:
        """Boot the native image and probe its health endpoint."""
        await run_smoke(
            plan, built.native, prober_image=self._prober_image, run_id=uuid.uuid4().hex, client=self._client
        )

    async def reports_directory(self, plan: ServicePlan) -> dagger.Directory:
        """Build and test one service; its reports directory, even when the tests failed."""
        if plan.service.test is None or not plan.service.test.reports:
            raise UsageError(
                f'{plan.name} declares no test reports: add reports = "/path/in/container" '
                f"under [services.{plan.name}.test]"
            )
        report = await self.test(plan, await self.build(plan))
        if not isinstance(report.reports, dagger.Directory):
            raise UsageError(f"{plan.name}: its tests returned no reports directory")
        return report.reports

    async def read_reports(self, service: str, reports: object) -> dict[str, str]:
        """The XML files of a service's test reports, exported to ``reports_dir/<service>`` when set."""
        if not isinstance(reports, dagger.Directory):
            return {}
        if self._reports_dir is not None:
            await reports.export(str(self._reports_dir / service))
        paths = await reports.glob("**/*.xml")
        return {path: await reports.file(path).contents() for path in sorted(paths)}

    async def publish(self, plan: ServicePlan, built: Built, address: str) -> str:
        """Push every platform to ``address`` as one image; return the digest-pinned reference."""
        return await publish(
            list(built.variants),
            address,
            service=plan.name,
            registry=plan.registry,
            username=self._username,
            token=self._token,
            client=self._client,
        )
