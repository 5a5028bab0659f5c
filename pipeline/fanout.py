"""Run one piece of work per service, concurrently, and report each one's outcome.

One anyio task group runs every service; a ``CapacityLimiter`` bounds how many
run at once (the engine's CPU, memory and disk are shared, and a GitHub runner
has two to four cores). A failing service never hides the others: its error is
recorded as a ``Failure`` and the rest carry on, unless ``fail_fast`` asks to
cancel them, in which case they are recorded as ``Cancelled``.

Errors are turned into ``PipelineError``s at this boundary, so a summary can
print them without a traceback: anyio's ``ExceptionGroup`` wrappers are opened,
a ``dagger.ExecError`` becomes a ``BuildError`` naming the command, its exit code
and the last lines of its output, and anything unexpected becomes a
``BuildError`` too rather than crashing the whole run. The step a service was
in when it failed comes from ``mark_step``, which the work calls as it goes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

import anyio

if TYPE_CHECKING:
    import dagger

from pipeline.errors import BuildError, PipelineError, UsageError

T = TypeVar("T")

TAIL_LINES = 30
DEFAULT_STEP = "run"


@dataclass(frozen=True, slots=True, kw_only=True)
class Success(Generic[T]):
    """The work finished and returned ``value``."""

    value: T


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """The work failed in ``step`` with ``error``."""

    error: PipelineError
    step: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The work was stopped before it finished, because another service failed."""

    reason: str


Outcome: TypeAlias = Success[T] | Failure | Cancelled


class _StepCell:
    """Where one service's work is; shared by the tasks it spawns through the context."""

    __slots__ = ("step",)

    def __init__(self, step: str) -> None:
        self.step = step


_CURRENT_STEP: contextvars.ContextVar[_StepCell | None] = contextvars.ContextVar("pipeline_step", default=None)


def mark_step(step: str) -> None:
    """Record the step the current service is in, so a failure can name it."""
    cell = _CURRENT_STEP.get()
    if cell is not None:
        cell.step = step


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of some output, without trailing blank ones."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept)


def exec_output(error: dagger.ExecError) -> str:
    """The tail of a failed command's stdout and stderr, labelled."""
    parts = []
    if error.stdout.strip():
        parts.append("stdout:\n" + tail(error.stdout))
    if error.stderr.strip():
        parts.append("stderr:\n" + tail(error.stderr))
    return "\n".join(parts)


def first_error(error: BaseException) -> BaseException:
    """The error inside anyio's ``ExceptionGroup`` wrappers, preferring our own errors."""
    leaves = _leaves(error)
    return next((e for e in leaves if isinstance(e, PipelineError)), leaves[0] if leaves else error)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def as_pipeline_error(service: str, step: str, error: BaseException) -> PipelineError:
    """Any error from one service's work, as one ``PipelineError`` a person can read."""
    error = first_error(error)
    if isinstance(error, PipelineError):
        return error
    # Imported here: plans, deploys with --skip-build and status never load the Dagger SDK (~1 s).
    import dagger  # noqa: PLC0415

    if isinstance(error, dagger.ExecError):
        command = " ".join(error.command)
        return BuildError(service, step, f"`{command}` exited {error.exit_code}", exec_output(error))
    if isinstance(error, dagger.DaggerError):
        # Engine messages put the summary first and the details (service output,
        # the failing Dockerfile line) after it.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return BuildError(service, step, lines[0], tail("\n".join(lines[1:])))
    if isinstance(error, TimeoutError):
        return BuildError(service, step, "timed out")
    return BuildError(service, step, f"unexpected {type(error).__name__}: {error}")


async def run_each(
    names: Sequence[str],
    work: Callable[[str], Awaitable[T]],
    *,
    concurrency: int | None,
    fail_fast: bool,
) -> dict[str, Outcome[T]]:
    """Run ``work(name)`` for every name, at most ``concurrency`` at once; outcomes in input order."""
    if concurrency is not None and concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, got {concurrency}; omit it to run every service at once")
    if len(set(names)) != len(names):
        raise UsageError(f"each service may be listed once, got {', '.join(names)}")
    if not names:
        return {}
    limiter = anyio.CapacityLimiter(concurrency or len(names))
    outcomes: dict[str, Outcome[T]] = {}
    first_failure: list[str] = []

    async with anyio.create_task_group() as group:

        async def one(name: str) -> None:
            cell = _StepCell(DEFAULT_STEP)
            _CURRENT_STEP.set(cell)
            # The outcome is recorded while the slot is held: under fail_fast the
            # cancel is issued before a queued service can take the freed slot.
            async with limiter:
                if first_failure:
                    return
                try:
                    value = await work(name)
                except Exception as e:
                    outcomes[name] = Failure(error=as_pipeline_error(name, cell.step, e), step=cell.step)
                    if fail_fast and not first_failure:
                        first_failure.append(name)
                        group.cancel_scope.cancel()
                else:
                    outcomes[name] = Success(value=value)

        for name in names:
            # Each task runs in a copy of the current context, so the step cell set
            # inside it belongs to that service alone.
            group.start_soon(one, name, name=f"pipeline:{name}")

    reason = f"stopped after {first_failure[0]} failed (--fail-fast)" if first_failure else "stopped"
    return {name: outcomes.get(name, Cancelled(reason=reason)) for name in names}
