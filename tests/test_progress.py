"""Progress lines: exact text with a fake clock, failures, cancellation, concurrency."""

from __future__ import annotations

import io
import re
import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from pipeline.errors import BuildError
from pipeline.progress import Progress, format_duration, reason


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def progress(out: io.StringIO, clock: FakeClock) -> Progress:
    return Progress(stream=out, clock=clock)


async def test_step_prints_start_and_ok_with_duration(progress, out, clock):
    """A step that succeeds prints a start line and an ok line with its duration."""
    async with progress.step("build", service="brain-gateway"):
        clock.advance(12.34)
    assert out.getvalue() == "-> build brain-gateway\nok build brain-gateway (12.3s)\n"


async def test_failed_step_prints_first_line_of_reason_and_reraises(progress, out, clock):
    """A failing step prints FAILED with the error's first line, and the error still propagates."""

    async def run_tests() -> None:
        async with progress.step("test", service="client-portal"):
            clock.advance(3.1)
            raise BuildError("client-portal", "tests", "exit code 1", "FAILED test_login\n1 failed")

    with pytest.raises(BuildError):
        await run_tests()
    assert out.getvalue().splitlines() == [
        "-> test client-portal",
        "FAILED test client-portal (3.1s): client-portal: tests failed: exit code 1",
    ]


async def test_cancelled_step_says_cancelled_not_failed(progress, out, clock):
    """A step cancelled by its task group prints 'cancelled', not FAILED."""
    with anyio.CancelScope() as scope:
        async with progress.step("push", service="admin-dashboard"):
            clock.advance(1.0)
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert out.getvalue().splitlines() == ["-> push admin-dashboard", "cancelled push admin-dashboard (1.0s)"]


def test_phase_as_context_prints_how_it_ended(progress, out, clock):
    """A phase used with `with` prints its header and then its result and duration."""
    with progress.phase("deploy backend"):
        clock.advance(75)

    def deploy_frontend() -> None:
        with progress.phase("deploy frontend"):
            clock.advance(2)
            raise RuntimeError("Dokploy said no\nmore detail")

    with pytest.raises(RuntimeError):
        deploy_frontend()
    assert out.getvalue().splitlines() == [
        "== deploy backend",
        "== deploy backend: ok (1m 15s)",
        "== deploy frontend",
        "== deploy frontend: FAILED (2.0s): Dokploy said no",
    ]


def test_phase_and_note_as_plain_calls(progress, out):
    """A bare phase call prints only its header; a note prints one 'note:' line."""
    progress.phase("publish")
    progress.note("tests skipped by --skip-tests")
    assert out.getvalue() == "== publish\nnote: tests skipped by --skip-tests\n"


def test_control_characters_never_reach_the_output(progress, out):
    """ANSI escapes, carriage returns and newlines in names become plain spaces on one line."""
    with progress.step("build", service="\x1b[31mbrain\r\ngateway\x1b[0m"):
        pass
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\r" not in text
    assert text.splitlines() == ["-> build [31mbrain gateway [0m", "ok build [31mbrain gateway [0m (0.0s)"]


def test_default_stream_is_stderr_at_write_time(capsys):
    """Without a stream, lines go to whatever sys.stderr is when they are written."""
    Progress(clock=lambda: 0.0).note("hello")
    captured = capsys.readouterr()
    assert captured.err == "note: hello\n"
    assert captured.out == ""


async def test_concurrent_tasks_write_whole_lines(out, clock):
    """Many tasks running steps at once produce only whole, well-formed lines."""
    progress = Progress(stream=out, clock=clock)

    async def work(n: int) -> None:
        async with progress.step("build", service=f"svc-{n}"):
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(work, n)
    lines = out.getvalue().splitlines()
    assert len(lines) == 40
    assert all(re.fullmatch(r"(-> build svc-\d+|ok build svc-\d+ \(0\.0s\))", line) for line in lines)
    assert sorted(lines) == sorted(
        [f"-> build svc-{n}" for n in range(20)] + [f"ok build svc-{n} (0.0s)" for n in range(20)]
    )


class CharByCharStream(io.StringIO):
    """A stream that writes one character at a time, yielding to other threads in between."""

    def write(self, text: str) -> int:
        for ch in text:
            super().write(ch)
            time.sleep(0)  # Only yields the GIL, so threads interleave if nothing stops them.
        return len(text)


async def test_threads_never_interleave_within_a_line(clock):
    """Writes from worker threads stay whole lines even on a stream that writes piecemeal."""
    stream = CharByCharStream()
    progress = Progress(stream=stream, clock=clock)
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        for i in range(25):
            progress.note(f"thread {n} line {i}")

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(anyio.to_thread.run_sync, writer, n)
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"note: thread {n} line {i}" for n in range(8) for i in range(25))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0s"),
        (-0.5, "0.0s"),
        (12.34, "12.3s"),
        (59.94, "59.9s"),
        (59.96, "1m 00s"),
        (125, "2m 05s"),
        (3599.6, "1h 00m"),
        (3725, "1h 02m"),
    ],
)
def test_format_duration(seconds, text):
    """Durations read as seconds, then minutes and seconds, then hours and minutes."""
    assert format_duration(seconds) == text


def test_reason_unwraps_a_lone_task_group_error():
    """The reason for a task group's single failure is that failure's message."""
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ValueError("bad tag 'Latest'")])
    assert reason(group) == "bad tag 'Latest'"


def test_reason_falls_back_to_the_class_and_shortens_long_messages():
    """An empty message gives the class name; a very long one is cut to 200 characters."""
    assert reason(TimeoutError()) == "TimeoutError"
    long = reason(RuntimeError("x" * 500))
    assert len(long) == 200
    assert long.endswith("...")
