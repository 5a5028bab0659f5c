"""Tests for pipeline.fanout: bounded concurrency, isolated failures, fail-fast."""

from __future__ import annotations

import anyio
import dagger
import gql
import pytest
from anyio import wait_all_tasks_blocked
from dagger._exceptions import QueryErrorValue

from pipeline.errors import BuildError, PublishError, UsageError
from pipeline.fanout import Cancelled, Failure, Success, as_pipeline_error, mark_step, run_each


def exec_error(command: list[str], code: int, stdout: str = "", stderr: str = "") -> dagger.ExecError:
    """A dagger.ExecError as the SDK builds it from an engine response."""
    extensions = {"_type": "EXEC_ERROR", "cmd": command, "exitCode": code, "stdout": stdout, "stderr": stderr}
    error = dagger.QueryError(
        [QueryErrorValue(message=f"process {command} did not complete successfully", extensions=extensions)],
        gql.GraphQLRequest("{ container { id } }"),
    )
    assert isinstance(error, dagger.ExecError)
    return error


def query_error(message: str) -> dagger.QueryError:
    """A dagger.QueryError as the SDK builds it from an engine response."""
    return dagger.QueryError([QueryErrorValue(message=message)], gql.GraphQLRequest("{ container { id } }"))


class Gates:
    """Work that blocks until released, counting how many run at once."""

    def __init__(self, names: list[str]) -> None:
        self.gates = {name: anyio.Event() for name in names}
        self.entered: list[str] = []
        self.active = 0
        self.most = 0

    async def work(self, name: str) -> str:
        self.entered.append(name)
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.gates[name].wait()
        finally:
            self.active -= 1
        return name.upper()


async def test_results_come_back_in_input_order():
    """Outcomes are keyed in the order the names were given, whatever order work finishes in."""
    names = ["c", "a", "b"]
    gates = Gates(names)
    results = {}

    async def run() -> None:
        results.update(await run_each(names, gates.work, concurrency=None, fail_fast=False))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await wait_all_tasks_blocked()
        for name in reversed(names):
            gates.gates[name].set()
            await wait_all_tasks_blocked()

    assert list(results) == names
    assert results == {n: Success(value=n.upper()) for n in names}


async def test_concurrency_limit_bounds_how_many_run_at_once():
    """With concurrency=2, a third service starts only when one of the first two ends."""
    names = ["a", "b", "c", "d", "e"]
    gates = Gates(names)
    results = {}

    async def run() -> None:
        results.update(await run_each(names, gates.work, concurrency=2, fail_fast=False))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await wait_all_tasks_blocked()
        assert len(gates.entered) == 2
        for released in range(len(names)):
            gates.gates[gates.entered[released]].set()
            await wait_all_tasks_blocked()
            assert gates.active == min(2, len(names) - released - 1)

    assert gates.most == 2
    assert sorted(gates.entered) == names
    assert all(isinstance(outcome, Success) for outcome in results.values())


async def test_without_a_limit_every_service_runs_at_once():
    """concurrency=None runs all services together."""
    names = ["a", "b", "c", "d"]
    gates = Gates(names)

    async def run() -> None:
        await run_each(names, gates.work, concurrency=None, fail_fast=False)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await wait_all_tasks_blocked()
        assert gates.active == 4
        for gate in gates.gates.values():
            gate.set()


async def test_a_failure_keeps_the_other_services():
    """One service failing is recorded with its error and step; the others still succeed."""

    async def work(name: str) -> str:
        mark_step("build")
        if name == "bad":
            mark_step("test")
            raise BuildError(name, "test", "`pytest` exited 1")
        await anyio.sleep(0)
        return f"{name}-ok"

    results = await run_each(["one", "bad", "two"], work, concurrency=1, fail_fast=False)

    assert results["one"] == Success(value="one-ok")
    assert results["two"] == Success(value="two-ok")
    failure = results["bad"]
    assert isinstance(failure, Failure)
    assert failure.step == "test"
    assert str(failure.error) == "bad: test failed: `pytest` exited 1"


async def test_fail_fast_cancels_the_rest_and_marks_them_cancelled():
    """With fail_fast, the first failure cancels every other service, named in the reason."""
    started: list[str] = []

    async def work(name: str) -> str:
        started.append(name)
        if name == "bad":
            await wait_all_tasks_blocked()  # let the others start first
            raise PublishError(name, "ghcr.io/o/bad:src-1", "denied")
        await anyio.sleep_forever()
        return name

    results = await run_each(["a", "bad", "b"], work, concurrency=None, fail_fast=True)

    assert started == ["a", "bad", "b"]
    assert isinstance(results["bad"], Failure)
    assert results["a"] == Cancelled(reason="stopped after bad failed (--fail-fast)")
    assert results["b"] == Cancelled(reason="stopped after bad failed (--fail-fast)")


async def test_fail_fast_also_cancels_services_still_waiting_for_a_slot():
    """Services queued behind the limiter are cancelled too, never started."""
    started: list[str] = []

    async def work(name: str) -> str:
        started.append(name)
        raise BuildError(name, "build", "broken")

    results = await run_each(["a", "b", "c"], work, concurrency=1, fail_fast=True)

    assert started == ["a"]
    assert isinstance(results["a"], Failure)
    assert isinstance(results["b"], Cancelled)
    assert isinstance(results["c"], Cancelled)


async def test_without_fail_fast_every_failure_is_reported():
    """Several failures are all kept, each with its own step."""

    async def work(name: str) -> str:
        mark_step(f"step-of-{name}")
        await anyio.sleep(0)
        raise RuntimeError(f"{name} broke")

    results = await run_each(["a", "b"], work, concurrency=None, fail_fast=False)

    for name in ("a", "b"):
        failure = results[name]
        assert isinstance(failure, Failure)
        assert failure.step == f"step-of-{name}"
        assert str(failure.error) == f"{name}: step-of-{name} failed: unexpected RuntimeError: {name} broke"


async def test_an_exec_error_becomes_a_build_error_with_the_output_tail():
    """A dagger.ExecError names the command and exit code and keeps the end of its output."""
    stdout = "\n".join(f"line {i}" for i in range(100))

    async def work(name: str) -> str:
        mark_step("build")
        raise exec_error(["npm", "run", "build"], 2, stdout=stdout, stderr="ERR! missing script\n")

    results = await run_each(["web"], work, concurrency=None, fail_fast=False)

    failure = results["web"]
    assert isinstance(failure, Failure)
    error = failure.error
    assert isinstance(error, BuildError)
    assert (error.service, error.step, error.detail) == ("web", "build", "`npm run build` exited 2")
    assert "line 99" in error.output_tail
    assert "line 69" not in error.output_tail  # only the tail
    assert "stderr:\nERR! missing script" in error.output_tail


async def test_an_error_inside_the_works_own_task_group_is_unwrapped():
    """An ExecError raised in a child task is reported as itself, not as an ExceptionGroup."""

    async def work(name: str) -> str:
        async def platform_build() -> None:
            mark_step("build")
            raise exec_error(["go", "build"], 1, stderr="undefined: x")

        async with anyio.create_task_group() as group:
            group.start_soon(platform_build)
        return name

    results = await run_each(["api"], work, concurrency=None, fail_fast=False)

    failure = results["api"]
    assert isinstance(failure, Failure)
    assert failure.step == "build"
    assert isinstance(failure.error, BuildError)
    assert failure.error.detail == "`go build` exited 1"
    assert "undefined: x" in failure.error.output_tail


def test_a_group_prefers_our_own_error_over_others():
    """In an ExceptionGroup holding several errors, the PipelineError is the one reported."""
    ours = PublishError("api", "ghcr.io/o/api:1", "denied")
    group = ExceptionGroup("two", [RuntimeError("noise"), ExceptionGroup("inner", [ours])])
    assert as_pipeline_error("api", "publish", group) is ours


def test_a_query_error_keeps_its_first_line_as_detail_and_the_rest_as_tail():
    """An engine error's summary line becomes the detail; the lines after it the tail."""
    error = as_pipeline_error("api", "smoke", query_error("exited: exit status 1\noutput: boom\nat line 3"))
    assert isinstance(error, BuildError)
    assert error.detail == "exited: exit status 1"
    assert error.output_tail == "output: boom\nat line 3"


def test_a_timeout_says_so():
    """A TimeoutError escaping the work becomes 'timed out' in the failing step."""
    error = as_pipeline_error("api", "test", TimeoutError())
    assert str(error) == "api: test failed: timed out"


async def test_steps_are_kept_apart_per_service():
    """mark_step in one service never changes the step recorded for another."""
    both_marked = anyio.Event()
    marked: list[str] = []

    async def work(name: str) -> str:
        mark_step(f"{name}-step")
        marked.append(name)
        if len(marked) == 2:
            both_marked.set()
        await both_marked.wait()
        raise RuntimeError("late")

    results = await run_each(["a", "b"], work, concurrency=None, fail_fast=False)

    assert {name: o.step for name, o in results.items() if isinstance(o, Failure)} == {"a": "a-step", "b": "b-step"}


async def test_mark_step_outside_a_fan_out_does_nothing():
    """Calling mark_step with no running fan-out is harmless."""
    mark_step("anything")


async def test_no_names_means_no_work():
    """An empty selection returns an empty result without running anything."""

    async def work(name: str) -> str:
        raise AssertionError("not called")

    assert await run_each([], work, concurrency=2, fail_fast=True) == {}


@pytest.mark.parametrize("concurrency", [0, -1])
async def test_a_concurrency_below_one_is_refused(concurrency):
    """concurrency must be at least one; the message says how to run without a limit."""

    async def work(name: str) -> str:
        return name

    with pytest.raises(UsageError, match=r"concurrency must be at least 1, got .*omit it"):
        await run_each(["a"], work, concurrency=concurrency, fail_fast=False)


async def test_a_service_listed_twice_is_refused():
    """Duplicate names are a usage error, not two runs racing on one image."""

    async def work(name: str) -> str:
        return name

    with pytest.raises(UsageError, match="listed once"):
        await run_each(["a", "a"], work, concurrency=None, fail_fast=False)
