"""Tests for pipeline.images: reuse or build, gate publishing on tests and smoke, tag one digest.

The engine is a fake that records calls; its publish pushes a synthetic image to
a real local registry (Debian's docker-registry), and the registry side goes
through the real RegistryClient, so reuse and tagging are checked against a real
registry's answers.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from pipeline import config
from pipeline.errors import BuildError, ManifestNotFoundError, PublishError, UsageError
from pipeline.images import ImageResult, TestReport, produce
from pipeline.plan import ServicePlan
from pipeline.progress import Progress
from pipeline.registry import RegistryClient
from pipeline.retry import RetryPolicy
from tests.support.images import push_image

if TYPE_CHECKING:
    from tests.support.registry import RunningRegistry


TAGS = ("staging", "staging-abc1234")


def make_plan(
    name: str,
    registry: str,
    *,
    key_digit: str = "a",
    test: config.TestSpec | None = None,
    smoke: config.SmokeCheck | None = None,
    tags: tuple[str, ...] = TAGS,
) -> ServicePlan:
    """A plan for one service whose content key is 64 times ``key_digit``."""
    key = key_digit * 64
    return ServicePlan(
        name=name,
        service=config.Service(name=name, context=f"services/{name}", test=test, smoke=smoke),
        group="backend",
        image=f"{registry}/acme/{name}",
        registry=registry,
        repository=f"acme/{name}",
        tags=tags,
        content_key=key,
        content_tag=f"src-{key[:12]}",
        labels={"org.opencontainers.image.revision": "abc1234"},
    )


class FakeEngine:
    """Records each call; publish pushes a synthetic image named by the built handle."""

    def __init__(
        self,
        client: RegistryClient | None = None,
        *,
        build_errors: dict[str, Exception] | None = None,
        test_errors: dict[str, BuildError] | None = None,
        smoke_errors: dict[str, BuildError] | None = None,
        payloads: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.build_errors = build_errors or {}
        self.test_errors = test_errors or {}
        self.smoke_errors = smoke_errors or {}
        self.payloads = payloads or {}
        self.calls: list[tuple[str, str]] = []

    async def build(self, plan: ServicePlan) -> str:
        self.calls.append(("build", plan.name))
        if plan.name in self.build_errors:
            raise self.build_errors[plan.name]
        return f"image of {plan.name}"

    async def test(self, plan: ServicePlan, built: str) -> TestReport:
        self.calls.append(("test", plan.name))
        return TestReport(error=self.test_errors.get(plan.name), reports=f"reports of {plan.name}")

    async def smoke(self, plan: ServicePlan, built: str) -> None:
        self.calls.append(("smoke", plan.name))
        if plan.name in self.smoke_errors:
            raise self.smoke_errors[plan.name]

    async def publish(self, plan: ServicePlan, built: str, address: str) -> str:
        self.calls.append(("publish", address))
        assert self.client is not None, "this test's engine cannot publish"
        tag = address.rpartition(":")[2]
        # A changed payload per tag (payloads) makes the engine push different images.
        payload = self.payloads.get(tag, built)
        digest = await push_image(self.client, plan.repository, tag, payload=payload.encode())
        return f"{address}@{digest}"

    def steps(self, service: str) -> list[str]:
        return [step for step, name in self.calls if name == service]

    def published(self) -> list[str]:
        return [address for step, address in self.calls if step == "publish"]


@pytest.fixture
async def client(registry: RunningRegistry) -> AsyncIterator[RegistryClient]:
    async with httpx.AsyncClient() as http:
        yield RegistryClient(http, registry=registry.host)


async def tags_of(client: RegistryClient, repo: str) -> list[str]:
    try:
        return await client.tags(repo)
    except ManifestNotFoundError:
        return []


async def digests_of(client: RegistryClient, repo: str, tags: tuple[str, ...]) -> set[str]:
    return {(await client.resolve(repo, tag)).digest for tag in tags}


async def test_an_unchanged_service_is_reused_and_its_new_tags_point_to_the_old_digest(client):
    """The content tag is in the registry: nothing is built, the tags are copied onto that digest."""
    plan = make_plan("api", client.registry)
    old = await push_image(client, plan.repository, plan.content_tag, payload=b"built last week")
    engine = FakeEngine(client)

    results = await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False)

    result = results["api"]
    assert engine.calls == []
    assert (result.change, result.digest, result.error) == ("reused", old, None)
    assert result.reference == f"{plan.image}@{old}"
    assert result.tags == (plan.content_tag, *TAGS)
    assert await digests_of(client, plan.repository, TAGS) == {old}


async def test_a_changed_service_is_built_tested_and_every_tag_shares_one_digest(client):
    """No image has these inputs: build, test, smoke, push once, copy the other tags."""
    plan = make_plan(
        "api",
        client.registry,
        test=config.TestSpec(command=("pytest",)),
        smoke=config.SmokeCheck(port=8001, path="/health"),
    )
    await push_image(client, plan.repository, "src-bbbbbbbbbbbb", payload=b"other inputs")
    engine = FakeEngine(client)

    result = (await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False))["api"]

    assert engine.steps("api") == ["build", "test", "smoke"]
    assert engine.published() == [f"{plan.image}:{plan.content_tag}"]
    assert (result.change, result.tests, result.smoke, result.error) == ("built", "passed", "passed", None)
    assert result.tags == (plan.content_tag, *TAGS)
    assert await digests_of(client, plan.repository, result.tags) == {result.digest}
    assert result.reference == f"{plan.image}@{result.digest}"
    assert result.reports == "reports of api"


async def test_one_run_reuses_the_unchanged_and_rebuilds_the_changed(client):
    """Two services in one run: each gets the decision its own content tag calls for."""
    same = make_plan("same", client.registry)
    changed = make_plan("changed", client.registry)
    old = await push_image(client, same.repository, same.content_tag, payload=b"same inputs")
    engine = FakeEngine(client)

    results = await produce([same, changed], engine=engine, registry=client, concurrency=2, fail_fast=False)

    assert list(results) == ["same", "changed"]
    assert (results["same"].change, results["same"].digest) == ("reused", old)
    assert results["changed"].change == "built"
    assert results["changed"].digest != old
    assert engine.steps("same") == []
    assert engine.steps("changed") == ["build"]


async def test_force_build_builds_even_when_the_content_tag_exists(client):
    """--force-build skips the lookup and rebuilds."""
    plan = make_plan("api", client.registry)
    await push_image(client, plan.repository, plan.content_tag, payload=b"old")
    engine = FakeEngine(client)

    result = (
        await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False, force_build=True)
    )["api"]

    assert result.change == "built"
    assert engine.steps("api") == ["build"]
    assert await digests_of(client, plan.repository, result.tags) == {result.digest}


async def test_a_failed_test_publishes_nothing(client):
    """Tests failing: no publish call, no tag in the registry, reports kept, step 'test'."""
    plan = make_plan("api", client.registry, test=config.TestSpec(command=("pytest",)))
    error = BuildError("api", "test", "`pytest` exited 1", "FAILED test_x")
    engine = FakeEngine(client, test_errors={"api": error})

    result = (await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False))["api"]

    assert (result.change, result.tests, result.step, result.error) == ("failed", "failed", "test", error)
    assert result.reports == "reports of api"
    assert (result.digest, result.reference, result.tags) == ("", "", ())
    assert engine.published() == []
    assert await tags_of(client, plan.repository) == []


async def test_tests_that_cannot_run_count_as_failed(client):
    """The engine raising instead of reporting still marks the tests failed and publishes nothing."""

    class Broken(FakeEngine):
        async def test(self, plan: ServicePlan, built: str) -> TestReport:
            raise BuildError(plan.name, "test", "timed out after 900s")

    plan = make_plan("api", client.registry, test=config.TestSpec(command=("pytest",)))
    result = (await produce([plan], engine=Broken(client), registry=client, concurrency=None, fail_fast=False))["api"]

    assert (result.change, result.tests, result.step) == ("failed", "failed", "test")
    assert await tags_of(client, plan.repository) == []


async def test_a_failed_smoke_check_publishes_nothing(client):
    """The image crashes on boot: tests passed, smoke failed, nothing pushed."""
    plan = make_plan(
        "api", client.registry, test=config.TestSpec(stage="test"), smoke=config.SmokeCheck(port=8001, path="/health")
    )
    error = BuildError("api", "smoke", "did not answer 200 on :8001/health within 60s", "exited 1")
    engine = FakeEngine(client, smoke_errors={"api": error})

    result = (await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False))["api"]

    assert (result.change, result.tests, result.smoke, result.step) == ("failed", "passed", "failed", "smoke")
    assert result.error is error
    assert engine.published() == []
    assert await tags_of(client, plan.repository) == []


async def test_a_failing_service_does_not_stop_the_others(client):
    """One build failing leaves the other service built and published."""
    good = make_plan("good", client.registry)
    bad = make_plan("bad", client.registry, key_digit="b")
    engine = FakeEngine(client, build_errors={"bad": RuntimeError("disk full")})

    results = await produce([bad, good], engine=engine, registry=client, concurrency=1, fail_fast=False)

    assert results["good"].change == "built"
    assert (results["bad"].change, results["bad"].step) == ("failed", "build")
    assert str(results["bad"].error) == "bad: build failed: unexpected RuntimeError: disk full"
    assert await tags_of(client, bad.repository) == []


async def test_fail_fast_cancels_the_other_services(client):
    """Under --fail-fast the first failure cancels the rest, which report 'cancelled'."""
    slow = make_plan("slow", client.registry)
    bad = make_plan("bad", client.registry, key_digit="b")

    class BlockingEngine(FakeEngine):
        async def build(self, plan: ServicePlan) -> str:
            if plan.name == "slow":
                self.calls.append(("build", "slow"))
                await wait_all_tasks_blocked()
                await anyio.sleep_forever()
            await wait_all_tasks_blocked()
            raise BuildError(plan.name, "build", "Dockerfile:3 RUN failed")

    engine = BlockingEngine(client)
    results = await produce([slow, bad], engine=engine, registry=client, concurrency=None, fail_fast=True)

    assert results["bad"].change == "failed"
    assert results["slow"].change == "cancelled"
    assert "stopped after bad failed" in results["slow"].note
    assert engine.published() == []


async def test_dry_run_builds_tests_and_smokes_but_publishes_nothing(client):
    """--dry-run runs every check, touches no registry, and says 'dry run'."""
    plan = make_plan(
        "api", client.registry, test=config.TestSpec(command=("pytest",)), smoke=config.SmokeCheck(port=80)
    )
    await push_image(client, plan.repository, plan.content_tag, payload=b"would be reused")
    engine = FakeEngine(client)

    result = (await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False, dry_run=True))[
        "api"
    ]

    assert (result.change, result.tests, result.smoke, result.digest) == ("dry run", "passed", "passed", "")
    assert engine.steps("api") == ["build", "test", "smoke"]
    assert engine.published() == []
    assert await tags_of(client, plan.repository) == [plan.content_tag]


async def test_skip_tests_marks_tests_skipped_and_still_smokes(client):
    """--skip-tests runs no tests but keeps the smoke check and publishes."""
    plan = make_plan(
        "api", client.registry, test=config.TestSpec(command=("pytest",)), smoke=config.SmokeCheck(port=80)
    )
    engine = FakeEngine(client)

    result = (
        await produce([plan], engine=engine, registry=client, concurrency=None, fail_fast=False, skip_tests=True)
    )["api"]

    assert (result.change, result.tests, result.smoke) == ("built", "skipped", "passed")
    assert engine.steps("api") == ["build", "smoke"]


async def test_skip_tests_leaves_a_service_without_tests_at_none(client):
    """--skip-tests says "skipped" only where tests were declared; elsewhere there was nothing to skip."""
    engine = FakeEngine(client)
    result = (
        await produce(
            [make_plan("api", client.registry)],
            engine=engine,
            registry=client,
            concurrency=None,
            fail_fast=False,
            skip_tests=True,
        )
    )["api"]
    assert (result.change, result.tests) == ("built", "none")


async def test_a_service_without_tests_or_smoke_says_none(client):
    """No [test] and no [smoke]: both report 'none' and the image is published."""
    engine = FakeEngine(client)
    result = (
        await produce(
            [make_plan("api", client.registry)], engine=engine, registry=client, concurrency=None, fail_fast=False
        )
    )["api"]
    assert (result.change, result.tests, result.smoke) == ("built", "none", "none")


async def test_an_unreachable_registry_is_noted_and_the_service_built():
    """The lookup fails: the note says why, the service is built anyway."""
    async with httpx.AsyncClient() as http:
        # Nothing listens on the loopback discard port: every request is refused.
        closed = RegistryClient(http, registry="127.0.0.1:9", timeout_s=2.0, retry=RetryPolicy(attempts=1))
        plan = make_plan("api", "127.0.0.1:9")
        engine = FakeEngine()

        result = (
            await produce([plan], engine=engine, registry=closed, concurrency=None, fail_fast=False, dry_run=False)
        )["api"]

    assert result.note.startswith("could not check the registry: ")
    assert engine.steps("api") == ["build"]
    # Publishing through the unreachable registry fails too, in the publish step.
    assert (result.change, result.step) == ("failed", "publish")


async def test_without_a_registry_client_the_engine_pushes_every_tag_and_digests_are_checked(client):
    """No registry credentials: noted, built, and each tag pushed by the engine to one digest."""
    plan = make_plan("api", client.registry)
    engine = FakeEngine(client)

    result = (await produce([plan], engine=engine, registry=None, concurrency=None, fail_fast=False))["api"]

    assert result.note == "could not check the registry: no registry credentials were given"
    assert result.change == "built"
    assert engine.published() == [f"{plan.image}:{tag}" for tag in (plan.content_tag, *TAGS)]
    assert await digests_of(client, plan.repository, result.tags) == {result.digest}


async def test_tags_that_end_up_on_different_digests_fail_the_publish(client):
    """If the engine pushes a different image for a later tag, the service fails naming that tag."""
    plan = make_plan("api", client.registry)
    engine = FakeEngine(client, payloads={"staging": "something else"})

    result = (await produce([plan], engine=engine, registry=None, concurrency=None, fail_fast=False))["api"]

    assert (result.change, result.step) == ("failed", "publish")
    assert isinstance(result.error, PublishError)
    assert result.error.reference == f"{plan.image}:staging"


async def test_a_reference_without_a_digest_is_refused(client):
    """An engine answer that is not pinned to a digest is a publish error, not a silent success."""

    class NoDigest(FakeEngine):
        async def publish(self, plan: ServicePlan, built: str, address: str) -> str:
            return address

    plan = make_plan("api", client.registry)
    result = (await produce([plan], engine=NoDigest(client), registry=client, concurrency=None, fail_fast=False))["api"]
    assert (result.change, result.step) == ("failed", "publish")
    assert "has no sha256 digest" in str(result.error)


async def test_a_digest_the_registry_does_not_hold_fails_the_publish(client):
    """The engine claims a digest other than the one the registry stored: the tags are not trusted."""

    class WrongDigest(FakeEngine):
        async def publish(self, plan: ServicePlan, built: str, address: str) -> str:
            await super().publish(plan, built, address)
            return f"{address}@sha256:{'0' * 64}"

    plan = make_plan("api", client.registry)
    result = (await produce([plan], engine=WrongDigest(client), registry=client, concurrency=None, fail_fast=False))[
        "api"
    ]
    assert (result.change, result.step) == ("failed", "publish")
    assert isinstance(result.error, PublishError)
    assert "but the registry holds" in result.error.detail


async def test_a_plan_for_another_registry_is_refused(client):
    """Credentials for one registry never go to another: the mismatch is a usage error."""
    plan = make_plan("api", "ghcr.io")
    with pytest.raises(UsageError, match=r"api: its image goes to ghcr\.io"):
        await produce([plan], engine=FakeEngine(client), registry=client, concurrency=None, fail_fast=False)


async def test_progress_lines_name_each_step(client):
    """With a Progress, every step prints a start line and an ok or FAILED line."""
    stream = io.StringIO()
    plan = make_plan("api", client.registry, test=config.TestSpec(command=("pytest",)))
    engine = FakeEngine(client, test_errors={"api": BuildError("api", "test", "`pytest` exited 1")})

    await produce(
        [plan],
        engine=engine,
        registry=client,
        concurrency=None,
        fail_fast=False,
        progress=Progress(stream, clock=lambda: 0.0),
    )

    assert stream.getvalue().splitlines() == [
        "-> build api",
        "ok build api (0.0s)",
        "-> test api",
        "FAILED test api (0.0s): api: test failed: `pytest` exited 1",
    ]


def test_image_result_defaults_describe_nothing_published():
    """A bare ImageResult has no digest, no tags and no error."""
    result = ImageResult(service="api", change="cancelled")
    assert (result.digest, result.reference, result.tags, result.error) == ("", "", (), None)
