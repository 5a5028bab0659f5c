"""End to end: the fixture monorepo built, tested, smoke-checked and published by a real engine.

Library mode (``dagger.connection``) against whatever engine is reachable; images go to
a real local registry (Debian's docker-registry) and are checked there with
RegistryClient: every tag exists, all tags of a service share one digest, the OCI
labels are in the config blob, and the services whose tests or smoke check fail
are absent.

The registry listens on 127.0.0.1 only, and the engine must reach it there: pushes
and the needs-db dependency pull go through the engine, which talks plain HTTP only
to loopback registries. So the engine must share this machine's network namespace,
e.g. one started with ``docker run --net=host --privileged registry.dagger.io/engine:v0.21.11``
and named by _EXPERIMENTAL_DAGGER_RUNNER_HOST=docker-container://<name>. The engine a
plain ``dagger`` CLI starts is a container with its own network, where 127.0.0.1 is the
engine itself: there the first push fails with "connection refused".
PIPELINE_E2E_REGISTRY_HOST renames the registry host (the port is appended) for setups
that forward it; any host but a loopback one needs TLS.

The build secret comes from PIPELINE_E2E_BUILD_TOKEN, which the test sets before it
connects; under ``dagger run`` the session already exists, so export that variable
first. Fixture images use themselves as the smoke prober (``self``), since Docker Hub
may not be reachable from the engine.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import dagger
import httpx
import pytest
from dagger import dag

from pipeline.build import Built, DaggerImageEngine
from pipeline.checks import PROBER_SELF
from pipeline.errors import BuildError, ManifestNotFoundError, MissingSecretError
from pipeline.images import ImageResult, TestReport, produce
from pipeline.plan import ServicePlan
from pipeline.registry import RegistryClient
from tests.e2e.conftest import BUSYBOX
from tests.e2e.monorepo import ENVIRONMENT, SHA, plans, prepare

if TYPE_CHECKING:
    from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.e2e

# A cold engine builds seven small images; generous, but a hang still ends.
E2E_TIMEOUT_S = 1200
BUILD_TOKEN = "e2e-build-token-value-7Qk"
FAKE_DB = "e2e/fake-db:1"


class CountingEngine:
    """The real Dagger engine, counting which services it was asked to build."""

    def __init__(self, inner: DaggerImageEngine) -> None:
        self.inner = inner
        self.built: list[str] = []

    async def build(self, plan: ServicePlan) -> Built:
        self.built.append(plan.name)
        return await self.inner.build(plan)

    async def test(self, plan: ServicePlan, built: Built) -> TestReport:
        return await self.inner.test(plan, built)

    async def smoke(self, plan: ServicePlan, built: Built) -> None:
        await self.inner.smoke(plan, built)

    async def publish(self, plan: ServicePlan, built: Built, address: str) -> str:
        return await self.inner.publish(plan, built, address)


def registry_host(registry: RunningRegistry) -> str:
    """host:port under which both this process and the engine reach the test registry."""
    host = os.environ.get("PIPELINE_E2E_REGISTRY_HOST", "").strip()
    return f"{host}:{registry.host.rpartition(':')[2]}" if host else registry.host


@pytest.fixture
def monorepo(tmp_path: Path, registry: RunningRegistry) -> Path:
    return prepare(tmp_path / "monorepo", registry_host=registry_host(registry), busybox=BUSYBOX)


@asynccontextmanager
async def session(root: Path) -> AsyncIterator[RegistryClient]:
    """An engine session and a client for the test registry, entered and left in one task."""
    # Not a fixture: the SDK's connection holds anyio cancel scopes, which must be
    # exited by the task that entered them.
    host = plans(root, "plain")["plain"].registry
    async with dagger.connection(dagger.Config(log_output=sys.stderr)), httpx.AsyncClient() as http:
        yield RegistryClient(http, registry=host, scheme="http")


def engine_for(root: Path) -> CountingEngine:
    return CountingEngine(DaggerImageEngine(dag.host().directory(str(root)), prober_image=PROBER_SELF))


async def publish_fake_db(root: Path, host: str) -> None:
    """The test dependency image, built here and pushed where services.toml says it is."""
    image = dag.host().directory(str(root / "support" / "fake-db")).docker_build()
    await image.publish(f"{host}/{FAKE_DB}")


async def tags_of(client: RegistryClient, repo: str) -> list[str]:
    try:
        return await client.tags(repo)
    except ManifestNotFoundError:
        return []


async def image_config(client: RegistryClient, repo: str, digest: str) -> dict[str, object]:
    """The config blob of the image (the first platform's, for an index)."""
    manifest = await client.get_manifest(repo, digest)
    document = json.loads(manifest.data)
    if manifest.is_index:
        manifest = await client.get_manifest(repo, document["manifests"][0]["digest"])
        document = json.loads(manifest.data)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"http://{client.registry}/v2/{repo}/blobs/{document['config']['digest']}")
    response.raise_for_status()
    config: dict[str, object] = response.json()
    return config


async def assert_published(client: RegistryClient, plan: ServicePlan, result: ImageResult) -> None:
    """Every tag exists and names the result's digest, and the image carries the plan's labels."""
    assert result.change == "built", result.error
    assert result.tags == (plan.content_tag, *plan.tags)
    assert result.reference == f"{plan.image}@{result.digest}"
    assert sorted(await tags_of(client, plan.repository)) == sorted(result.tags)
    for tag in result.tags:
        assert (await client.resolve(plan.repository, tag)).digest == result.digest
    image = await image_config(client, plan.repository, result.digest)
    settings = image["config"]
    assert isinstance(settings, dict)
    assert {k: settings["Labels"].get(k) for k in plan.labels} == dict(plan.labels)


async def test_each_service_is_built_checked_and_published_or_held_back(monorepo, monkeypatch, tmp_path):
    """Passing services are published under every tag; failing tests or smoke keep theirs out."""
    token = os.environ.get("PIPELINE_E2E_BUILD_TOKEN") or BUILD_TOKEN
    monkeypatch.setenv("PIPELINE_E2E_BUILD_TOKEN", token)
    all_plans = plans(monorepo)
    engine = engine_for(monorepo)
    with anyio.fail_after(E2E_TIMEOUT_S):
        async with session(monorepo) as client:
            await publish_fake_db(monorepo, client.registry)
            results = await produce(
                list(all_plans.values()), engine=engine, registry=client, concurrency=3, fail_fast=False
            )
            reports = results["failing-tests"].reports
            assert isinstance(reports, dagger.Directory)
            await reports.export(str(tmp_path / "reports"))

            for name in ("plain", "multistage", "argtarget", "needs-db"):
                await assert_published(client, all_plans[name], results[name])
            for name in ("failing-tests", "crash-on-boot"):
                assert await tags_of(client, all_plans[name].repository) == []
            multistage_config = await image_config(client, "e2e/multistage", results["multistage"].digest)

    assert sorted(engine.built) == sorted(all_plans)
    assert (results["plain"].tests, results["plain"].smoke) == ("none", "passed")
    # Passing means the command saw the stage's artifact, the mounted secret, the
    # .dockerignore'd context, the build arg, the target and the bound db service.
    for name in ("multistage", "argtarget", "needs-db"):
        assert results[name].tests == "passed", results[name].error
    assert results["plain"].tags == (all_plans["plain"].content_tag, ENVIRONMENT, f"{ENVIRONMENT}-{SHA[:7]}")

    failing = results["failing-tests"]
    assert (failing.change, failing.step, failing.tests) == ("failed", "test", "failed")
    assert isinstance(failing.error, BuildError)
    assert failing.error.detail.endswith("exited 1")
    assert "FAILED test_math: expected 4, got 5" in failing.error.output_tail
    assert 'failures="1"' in (tmp_path / "reports" / "junit.xml").read_text()

    crashed = results["crash-on-boot"]
    assert (crashed.change, crashed.step, crashed.smoke) == ("failed", "smoke", "failed")
    assert isinstance(crashed.error, BuildError)
    assert crashed.error.detail.startswith("did not answer 200 on :8080/health within 30s")

    # The build secret reached the RUN step (the test passed) but not the image.
    assert token not in json.dumps(multistage_config)
    assert all(token not in str(r.error) for r in results.values())


async def test_an_unchanged_service_is_reused_and_a_changed_one_rebuilt(monorepo):
    """Second run: same inputs reuse the digest without a build; a changed file rebuilds."""
    first_plans = plans(monorepo, "plain", "argtarget")
    with anyio.fail_after(E2E_TIMEOUT_S):
        async with session(monorepo) as client:
            first = await produce(
                list(first_plans.values()),
                engine=engine_for(monorepo),
                registry=client,
                concurrency=None,
                fail_fast=False,
            )
            assert {r.change for r in first.values()} == {"built"}, [r.error for r in first.values()]

            again = engine_for(monorepo)
            second = await produce(
                list(plans(monorepo, "plain", "argtarget").values()),
                engine=again,
                registry=client,
                concurrency=None,
                fail_fast=False,
            )
            assert again.built == []
            for name in ("plain", "argtarget"):
                assert (second[name].change, second[name].digest) == ("reused", first[name].digest)

            (monorepo / "services" / "plain" / "www" / "health").write_text("ok, changed\n")
            changed_plans = plans(monorepo, "plain", "argtarget")
            assert changed_plans["plain"].content_tag != first_plans["plain"].content_tag
            third_engine = engine_for(monorepo)
            third = await produce(
                list(changed_plans.values()), engine=third_engine, registry=client, concurrency=None, fail_fast=False
            )
            assert third_engine.built == ["plain"]
            assert third["plain"].change == "built"
            assert third["plain"].digest != first["plain"].digest
            assert third["argtarget"].change == "reused"
            assert (await client.resolve("e2e/plain", ENVIRONMENT)).digest == third["plain"].digest
            assert (await client.resolve("e2e/plain", first_plans["plain"].content_tag)).digest == first["plain"].digest


async def test_a_missing_build_secret_fails_the_build_naming_the_variable(monorepo):
    """The engine cannot read the secret's variable: the build fails with one clear error."""
    # A variable no environment has, so the test holds under `dagger run` too.
    variable = f"PIPELINE_E2E_UNSET_{uuid.uuid4().hex[:8].upper()}"
    plan = plans(monorepo, "multistage")["multistage"]
    plan = replace(plan, service=replace(plan.service, secrets={"e2e_token": f"env://{variable}"}))
    with anyio.fail_after(E2E_TIMEOUT_S):
        async with dagger.connection(dagger.Config(log_output=sys.stderr)):
            results = await produce(
                [plan], engine=engine_for(monorepo), registry=None, concurrency=None, fail_fast=False, dry_run=True
            )
    result = results["multistage"]
    assert (result.change, result.step) == ("failed", "build")
    assert isinstance(result.error, MissingSecretError)
    assert f"multistage: build secret 'e2e_token' comes from env://{variable}" in str(result.error)
    assert f"set the environment variable {variable}" in str(result.error)
