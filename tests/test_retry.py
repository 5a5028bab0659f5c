"""Tests for pipeline.retry: bounded attempts, bounded time, the hook decides."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from pipeline.retry import RetryPolicy, pause, retry

FAST = RetryPolicy(attempts=4, timeout_s=5.0, wait_initial_s=0.001, wait_max_s=0.004)


class Flaky(Exception):
    pass


def failing(times: int, error: Exception | None = None) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error or Flaky(f"failure {len(calls)}")
        return "ok"

    return call, calls


async def test_retries_until_success():
    """A call that fails twice then succeeds returns its result after three attempts."""
    call, calls = failing(2)
    assert await retry(call, policy=FAST, retry_on=lambda e: isinstance(e, Flaky)) == "ok"
    assert len(calls) == 3


async def test_gives_up_after_attempts_and_reraises_last_error():
    """When every attempt fails, the last error is raised after exactly ``attempts`` calls."""
    call, calls = failing(10)
    with pytest.raises(Flaky, match="failure 4"):
        await retry(call, policy=FAST, retry_on=lambda e: True)
    assert len(calls) == 4


@pytest.mark.parametrize("decision", [False, None])
async def test_hook_declining_stops_at_once(decision):
    """A hook answering False or None means the first error is raised without retrying."""
    call, calls = failing(10)
    with pytest.raises(Flaky):
        await retry(call, policy=FAST, retry_on=lambda e: decision)
    assert len(calls) == 1


async def test_only_errors_the_hook_accepts_are_retried():
    """The hook sees each error: a retryable one is retried, then a different one is raised."""
    errors = iter([Flaky("transient"), ValueError("permanent")])

    async def call() -> str:
        raise next(errors)

    with pytest.raises(ValueError, match="permanent"):
        await retry(call, policy=FAST, retry_on=lambda e: isinstance(e, Flaky))


@pytest.fixture
def waits(monkeypatch):
    """Record the waits retry.py asks for, without spending them."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await anyio.lowlevel.checkpoint()

    monkeypatch.setattr(anyio, "sleep", fake_sleep)  # retry.py calls it as anyio.sleep
    return recorded


async def test_float_from_hook_is_the_wait(waits):
    """A float from the hook (a Retry-After) is waited instead of the backoff."""
    call, calls = failing(2)
    assert await retry(call, policy=FAST, retry_on=lambda e: 1.5) == "ok"
    assert waits == [1.5, 1.5]
    assert len(calls) == 3


async def test_true_from_hook_waits_the_backoff(waits):
    """True from the hook waits the policy's jittered backoff, growing per attempt."""
    call, _ = failing(3)
    policy = RetryPolicy(attempts=4, timeout_s=60, wait_initial_s=0.1, wait_max_s=10)
    await retry(call, policy=policy, retry_on=lambda e: True)
    assert len(waits) == 3
    for wait, ceiling in zip(waits, [0.1, 0.2, 0.4], strict=True):
        assert ceiling / 2 <= wait <= ceiling


async def test_total_time_is_bounded():
    """A wait that would pass the policy's total timeout is not taken: the error is raised instead."""
    call, calls = failing(10)
    policy = RetryPolicy(attempts=100, timeout_s=0.05, wait_initial_s=0.02, wait_max_s=0.02)
    with pytest.raises(Flaky):
        await retry(call, policy=policy, retry_on=lambda e: True)
    assert 2 <= len(calls) < 10


def test_backoff_is_capped_exponential_with_jitter():
    """Backoff doubles from wait_initial_s, never exceeds wait_max_s, and is jittered below its ceiling."""
    policy = RetryPolicy(attempts=10, timeout_s=60, wait_initial_s=0.1, wait_max_s=0.5)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        waits = {policy.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"timeout_s": 0}, {"wait_initial_s": -1}, {"wait_max_s": -0.1}])
def test_policy_refuses_unbounded_or_negative_values(kwargs):
    """A policy without a positive attempt count and total time is refused."""
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)


async def test_pause_never_passes_the_deadline(waits):
    """pause waits the interval, or only what is left before the deadline, never a negative time."""
    now = 100.0
    await pause(2.0, deadline=now + 10, clock=lambda: now)
    await pause(2.0, deadline=now + 0.5, clock=lambda: now)
    await pause(2.0, deadline=now - 1, clock=lambda: now)
    assert waits == [2.0, 0.5, 0.0]


def test_no_fixed_sleeps_in_the_deploy_path():
    """Only retry.py sleeps; the Dokploy client, health gates and deploy flow wait through it."""
    root = Path(__file__).resolve().parents[1] / "pipeline"
    sleeps = {
        name: re.findall(r"\bsleep\(", (root / name).read_text())
        for name in ("dokploy.py", "health.py", "deploy.py", "retry.py")
    }
    assert sleeps["retry.py"], "retry.py is expected to hold the bounded waits"
    assert not any(sleeps[name] for name in ("dokploy.py", "health.py", "deploy.py")), sleeps
