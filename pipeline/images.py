"""Produce every service's image: reuse it, or build, test, smoke-check and publish it.

Per service, in order:

1. **Reuse.** Unless ``force_build``, ask the registry whether the content tag
   (``src-<12 hex>``, named by the build's inputs) exists. If it does, nothing is
   built: the environment's tags are copied onto that manifest byte for byte, so
   they point at the digest that was tested when it was built. If the registry
   cannot be asked, the note says why and the service is built.
2. **Build, test, smoke.** The image is built; its tests run unless
   ``skip_tests``; its smoke check runs if it declares one. A failed test or
   smoke check stops the service there, so it is never published.
3. **Publish.** The image is pushed once, to the content tag, by the engine.
   Every other tag is then copied from it through the registry API and checked
   to have the same digest: all tags of one run provably name one image.

``dry_run`` builds, tests and smoke-checks but touches no registry at all (not
even the reuse lookup, since what it verifies is the build).

The Dagger part is injected as an ``ImageEngine`` (``pipeline.build.DaggerImageEngine``
in real runs), so this flow is tested without an engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import anyio
import httpx

from pipeline.errors import BuildError, ManifestNotFoundError, PipelineError, PublishError, RegistryError, UsageError
from pipeline.fanout import Cancelled, Failure, Success, mark_step, run_each
from pipeline.plan import ServicePlan
from pipeline.registry import RegistryClient
from pipeline.tags import DIGEST, pinned

Change = Literal["built", "reused", "failed", "cancelled", "dry run"]
TestStatus = Literal["passed", "failed", "skipped", "none"]
SmokeStatus = Literal["passed", "failed", "none"]

H = TypeVar("H")


@dataclass(frozen=True, slots=True, kw_only=True)
class TestReport:
    """How a service's tests ended; ``reports`` survives a failure so it can be exported.

    Attributes:
        error: Why the tests failed, or None when they passed.
        reports: The test reports (a ``dagger.Directory`` from the Dagger engine), if the
            service declares a reports path.
    """

    __test__ = False  # not a pytest test class, despite the name

    error: BuildError | None = None
    reports: object | None = None


class ImageEngine(Protocol[H]):
    """Builds, checks and pushes one service's image; ``H`` is the engine's built handle."""

    async def build(self, plan: ServicePlan) -> H:
        """Build the image for every platform the service declares."""
        ...

    async def test(self, plan: ServicePlan, built: H) -> TestReport:
        """Run the service's tests (only called when it declares them)."""
        ...

    async def smoke(self, plan: ServicePlan, built: H) -> None:
        """Boot the image and probe it; raise BuildError(step="smoke") if it does not answer."""
        ...

    async def publish(self, plan: ServicePlan, built: H, address: str) -> str:
        """Push the image to ``address``; return the digest-pinned reference."""
        ...


class StepReporter(Protocol):
    """Prints a line when a step starts and ends (``pipeline.progress.Progress``)."""

    def step(self, action: str, service: str = "") -> AbstractAsyncContextManager[object]:
        """A context manager around one step of one service."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    """What happened to one service's image.

    Attributes:
        service: The service name.
        change: built, reused (no build: tags copied onto the existing image), failed,
            cancelled (another service failed under --fail-fast) or dry run.
        digest: The manifest digest every tag now names ("" when nothing was published).
        reference: ``image@digest``, the reference a deploy pins.
        tags: The tags that now name ``digest``: the content tag first.
        tests: passed, failed, skipped (--skip-tests) or none (none declared, or reused).
        smoke: passed, failed or none (none declared, or reused).
        error: Why it failed, for change == "failed".
        step: The step it failed in (reuse, build, test, smoke, publish).
        duration_s: Seconds from start to end of this service's work.
        reports: Test reports to export (a ``dagger.Directory``), when declared.
        note: A decision worth telling, e.g. why the registry could not be checked.
    """

    service: str
    change: Change
    digest: str = ""
    reference: str = ""
    tags: tuple[str, ...] = ()
    tests: TestStatus = "none"
    smoke: SmokeStatus = "none"
    error: PipelineError | None = None
    step: str = ""
    duration_s: float = 0.0
    reports: object | None = None
    note: str = ""


@dataclass(slots=True)
class _Draft:
    """What is known about one service so far; read back when it fails half-way."""

    tests: TestStatus = "none"
    smoke: SmokeStatus = "none"
    reports: object | None = None
    note: str = ""
    started: float | None = None
    ended: float | None = None

    @property
    def duration_s(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


@dataclass(frozen=True, slots=True, kw_only=True)
class _Done:
    change: Change
    digest: str = ""
    tags: tuple[str, ...] = ()


async def produce(
    plans: Sequence[ServicePlan],
    *,
    engine: ImageEngine[H],
    registry: RegistryClient | None,
    concurrency: int | None,
    fail_fast: bool,
    force_build: bool = False,
    skip_tests: bool = False,
    dry_run: bool = False,
    progress: StepReporter | None = None,
) -> dict[str, ImageResult]:
    """Reuse or build, test, smoke-check and publish every planned service; results in plan order."""
    by_name = {plan.name: plan for plan in plans}
    for plan in plans:
        if registry is not None and plan.registry != registry.registry:
            raise UsageError(
                f"{plan.name}: its image goes to {plan.registry}, but the registry client talks to "
                f"{registry.registry}; pass credentials for {plan.registry}"
            )
    drafts = {plan.name: _Draft() for plan in plans}
    flow = _Flow(
        engine=engine,
        registry=registry,
        force_build=force_build,
        skip_tests=skip_tests,
        dry_run=dry_run,
        progress=progress,
    )

    async def work(name: str) -> _Done:
        draft = drafts[name]
        draft.started = anyio.current_time()
        try:
            return await flow.one(by_name[name], draft)
        finally:
            draft.ended = anyio.current_time()

    outcomes = await run_each(list(by_name), work, concurrency=concurrency, fail_fast=fail_fast)
    return {name: _result(by_name[name], drafts[name], outcome) for name, outcome in outcomes.items()}


def _result(plan: ServicePlan, draft: _Draft, outcome: Success[_Done] | Failure | Cancelled) -> ImageResult:
    match outcome:
        case Success(value=done):
            change, digest, tags, error, step, note = done.change, done.digest, done.tags, None, "", draft.note
        case Failure(error=error, step=step):
            change, digest, tags, note = "failed", "", (), draft.note
        case Cancelled(reason=reason):
            change, digest, tags, error, step = "cancelled", "", (), None, ""
            note = "; ".join(n for n in (draft.note, reason) if n)
    return ImageResult(
        service=plan.name,
        change=change,
        digest=digest,
        reference=pinned(plan.image, digest) if digest else "",
        tags=tags,
        tests=draft.tests,
        smoke=draft.smoke,
        error=error,
        step=step,
        duration_s=draft.duration_s,
        reports=draft.reports,
        note=note,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Flow(Generic[H]):
    """The per-service steps, with the run's options."""

    engine: ImageEngine[H]
    registry: RegistryClient | None
    force_build: bool
    skip_tests: bool
    dry_run: bool
    progress: StepReporter | None

    async def one(self, plan: ServicePlan, draft: _Draft) -> _Done:
        if not self.force_build and not self.dry_run:
            mark_step("reuse")
            digest = await self._reusable(plan, draft)
            if digest:
                async with self._step("reuse", plan.name):
                    return await self._reuse(plan, digest)
        async with self._step("build", plan.name):
            built = await self.engine.build(plan)
        if plan.service.test is not None and self.skip_tests:
            draft.tests = "skipped"
        elif plan.service.test is not None:
            async with self._step("test", plan.name):
                try:
                    report = await self.engine.test(plan, built)
                except Exception:
                    draft.tests = "failed"
                    raise
                draft.reports = report.reports
                draft.tests = "failed" if report.error is not None else "passed"
                if report.error is not None:
                    raise report.error
        if plan.service.smoke is not None:
            async with self._step("smoke", plan.name):
                try:
                    await self.engine.smoke(plan, built)
                except Exception:
                    draft.smoke = "failed"
                    raise
                draft.smoke = "passed"
        if self.dry_run:
            return _Done(change="dry run")
        async with self._step("publish", plan.name):
            return await self._publish(plan, built)

    async def _reusable(self, plan: ServicePlan, draft: _Draft) -> str:
        """The digest the content tag names in the registry, or "" (with a note) to build."""
        if not plan.content_tag:
            draft.note = "content key unknown (no source given): built without checking the registry"
            return ""
        if self.registry is None:
            draft.note = "could not check the registry: no registry credentials were given"
            return ""
        try:
            found = await self.registry.resolve(plan.repository, plan.content_tag)
        except ManifestNotFoundError:
            return ""
        except (RegistryError, httpx.HTTPError) as e:
            draft.note = f"could not check the registry: {e}"
            return ""
        return found.digest

    async def _reuse(self, plan: ServicePlan, digest: str) -> _Done:
        """Point the environment's tags at the image the content tag names."""
        assert self.registry is not None  # _reusable found it through the registry
        copied = await self.registry.copy_tag(plan.repository, plan.content_tag, plan.tags)
        if copied != digest:
            raise PublishError(
                plan.name,
                f"{plan.image}:{plan.content_tag}",
                f"the tag moved from {digest} to {copied} while its tags were copied; run again",
            )
        return _Done(change="reused", digest=digest, tags=(plan.content_tag, *plan.tags))

    async def _publish(self, plan: ServicePlan, built: H) -> _Done:
        """Push once to the first address, then give the image its other tags."""
        tags = [*([plan.content_tag] if plan.content_tag else []), *plan.tags]
        if not tags:
            raise PublishError(plan.name, plan.image, "the plan has no tags to publish; check the environment's tags")
        first = f"{plan.image}:{tags[0]}"
        digest = _digest_of(plan, first, await self.engine.publish(plan, built, first))
        rest = tags[1:]
        if self.registry is not None:
            copied = await self.registry.copy_tag(plan.repository, tags[0], rest)
            if copied != digest:
                raise PublishError(
                    plan.name, first, f"the engine pushed {digest} but the registry holds {copied}; run again"
                )
        else:
            # Without registry access the engine pushes each tag itself; the same
            # container must give the same digest, and we check that it did.
            for tag in rest:
                address = f"{plan.image}:{tag}"
                other = _digest_of(plan, address, await self.engine.publish(plan, built, address))
                if other != digest:
                    raise PublishError(plan.name, address, f"got digest {other}, but {first} is {digest}")
        return _Done(change="built", digest=digest, tags=tuple(tags))

    @asynccontextmanager
    async def _step(self, step: str, service: str) -> AsyncIterator[None]:
        mark_step(step)
        if self.progress is None:
            yield
            return
        async with self.progress.step(step, service):
            yield


def _digest_of(plan: ServicePlan, address: str, reference: str) -> str:
    """The digest in ``name:tag@sha256:...``, or a PublishError saying what came back."""
    digest = reference.rpartition("@")[2]
    if not DIGEST.match(digest):
        raise PublishError(plan.name, address, f"the engine returned {reference!r}, which has no sha256 digest")
    return digest
