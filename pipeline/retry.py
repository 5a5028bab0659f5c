"""Bounded retries and deadline-bounded pauses: the only places the pipeline waits.

A retry policy always states both how many attempts and how much total time it
may spend (stamina's lesson: unbounded retries turn an outage into a hang). The
caller decides per exception whether to retry, so a non-idempotent request is
never re-sent by accident. Polling loops use ``pause`` so no wait can run past
its deadline; there are no fixed sleeps anywhere else.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

T = TypeVar("T")

RetryHook = Callable[[BaseException], bool | float | None]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """At most ``attempts`` tries within ``timeout_s``, waiting a capped, jittered exponential backoff."""

    attempts: int = 4
    timeout_s: float = 30.0
    wait_initial_s: float = 0.5
    wait_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout_s <= 0 or self.wait_initial_s < 0 or self.wait_max_s < 0:
            raise ValueError(f"invalid retry policy {self!r}: attempts >= 1, timeout_s > 0, waits >= 0")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): full jitter under a cap."""
        ceiling = min(self.wait_max_s, self.wait_initial_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


async def retry(call: Callable[[], Awaitable[T]], *, policy: RetryPolicy, retry_on: RetryHook) -> T:
    """Await ``call()`` until it succeeds, ``retry_on`` declines, or the policy is spent; re-raise the last error."""
    deadline = anyio.current_time() + policy.timeout_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except Exception as error:
            decision = retry_on(error)
            if decision is None or decision is False or attempt == policy.attempts:
                raise
            wait = policy.backoff(attempt) if decision is True else max(0.0, float(decision))
            if anyio.current_time() + wait > deadline:
                raise
            await anyio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


async def pause(interval_s: float, *, deadline: float, clock: Clock) -> None:
    """Wait one poll interval, but never past ``deadline`` (measured on ``clock``)."""
    await anyio.sleep(max(0.0, min(interval_s, deadline - clock())))
