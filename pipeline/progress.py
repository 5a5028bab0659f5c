"""Progress lines a person can follow while a long run is going.

A deploy builds seven images and waits on Dokploy for minutes; Dagger's own output
shows layers, not where the pipeline is. So every phase and every per-service step
prints one plain line when it starts and one when it ends, with how long it took:

    == deploy backend
    -> build brain-gateway
    ok build brain-gateway (12.3s)
    FAILED push bizoholic-frontend (3.1s): registry refused the credentials
    == deploy backend: FAILED (15.4s)

Plain text only (no colours, no carriage returns) because the lines end up in
Actions logs and files. Each line is one write under a lock, so concurrent tasks
never interleave within a line. The clock is injectable so tests can check exact lines.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_REASON_LIMIT = 200


def format_duration(seconds: float) -> str:
    """Seconds as a person reads them: 12.3s, 2m 05s, 1h 02m."""
    # Below 59.95 the one-decimal form cannot round up to an odd-looking "60.0s".
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def one_line(text: str) -> str:
    """Text made safe for a single log line: printable characters, single spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def reason(error: BaseException) -> str:
    """The first line of an error's message (unwrapping lone task-group errors), shortened."""
    # anyio task groups wrap a single failure in an ExceptionGroup whose own message
    # ("unhandled errors in a TaskGroup") says nothing; show the failure itself.
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    lines = str(error).strip().splitlines()
    text = one_line(lines[0]) if lines else ""
    if not text:
        return type(error).__name__
    if len(text) > _REASON_LIMIT:
        return text[: _REASON_LIMIT - 3] + "..."
    return text


class Progress:
    """Writes start and end lines for phases and steps to a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        # Resolved on each write, not here, so a redirected or captured stderr is honoured.
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()

    def phase(self, title: str) -> Span:
        """Print ``== title`` now; used as a context manager, also print how the phase ended."""
        name = one_line(title)
        return Span(
            self,
            start=f"== {name}",
            ok=f"== {name}: ok",
            failed=f"== {name}: FAILED",
            cancelled=f"== {name}: cancelled",
        )

    def step(self, action: str, service: str = "") -> Span:
        """Print ``-> action service`` now; as a context manager, print ``ok``/``FAILED`` at the end."""
        what = one_line(f"{action} {service}")
        return Span(self, start=f"-> {what}", ok=f"ok {what}", failed=f"FAILED {what}", cancelled=f"cancelled {what}")

    def note(self, text: str) -> None:
        """Print a free-form line, e.g. a decision the run made."""
        self.write(f"note: {one_line(text)}")

    def now(self) -> float:
        """The injected clock's current reading."""
        return self._clock()

    def write(self, line: str) -> None:
        """Write one whole line at once."""
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


class Span:
    """A started phase or step; leaving it (``with`` or ``async with``) prints how it ended."""

    __slots__ = ("_cancelled", "_failed", "_ok", "_progress", "_started")

    def __init__(self, progress: Progress, *, start: str, ok: str, failed: str, cancelled: str) -> None:
        self._progress = progress
        self._ok = ok
        self._failed = failed
        self._cancelled = cancelled
        self._started = progress.now()
        progress.write(start)

    def end(self, error: BaseException | None = None) -> None:
        """Print the end line: ok, FAILED with the reason, or cancelled."""
        took = f"({format_duration(self._progress.now() - self._started)})"
        if error is None:
            self._progress.write(f"{self._ok} {took}")
        elif isinstance(error, Exception):
            self._progress.write(f"{self._failed} {took}: {reason(error)}")
        else:
            # Cancellation (a sibling task failed) or an interrupt: not this step's fault.
            self._progress.write(f"{self._cancelled} {took}")

    def __enter__(self) -> Span:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.end(error)

    async def __aenter__(self) -> Span:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(error)
