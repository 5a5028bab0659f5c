"""Tests for pipeline.checks: the test and smoke-check recipes and how their failures read.

As in test_build, no engine runs: the recipes are checked on the lazy query the
real SDK builds, and an ``EngineDouble`` in place of ``Context.execute`` answers
the awaited values (exit codes, output) the way the engine would. The probe
shell script is run for real with busybox and with dash + GNU wget against an
HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import dagger
import gql
import pytest
from dagger._exceptions import QueryErrorValue

from pipeline import config
from pipeline.build import DaggerImageEngine, build_container
from pipeline.checks import (
    NO_WGET_EXIT,
    PROBE_SCRIPT,
    SMOKE_RUN_VARIABLE,
    TEST_RUN_VARIABLE,
    check_probe,
    command_container,
    ended,
    run_smoke,
    run_tests,
    smoke_prober,
)
from pipeline.errors import BuildError, UsageError
from pipeline.plan import ServicePlan
from tests.support.engine_double import Query, query, query_error


def exec_error(command: list[str], code: int, stdout: str = "", stderr: str = "") -> dagger.ExecError:
    extensions = {"_type": "EXEC_ERROR", "cmd": command, "exitCode": code, "stdout": stdout, "stderr": stderr}
    error = dagger.QueryError(
        [QueryErrorValue(message="exec failed", extensions=extensions)], gql.GraphQLRequest("{ x }")
    )
    assert isinstance(error, dagger.ExecError)
    return error


def make_plan(*, test: config.TestSpec | None = None, smoke: config.SmokeCheck | None = None) -> ServicePlan:
    service = config.Service(name="api", context="services/api", target="runtime", test=test, smoke=smoke)
    return ServicePlan(
        name="api",
        service=service,
        group="backend",
        image="ghcr.io/acme/api",
        registry="ghcr.io",
        repository="acme/api",
        tags=("staging",),
        content_key="a" * 64,
        content_tag="src-aaaaaaaaaaaa",
        labels={},
    )


def built_image(client: dagger.Client) -> dagger.Container:
    return client.host().directory("/repo").directory("services/api").docker_build(target="runtime")


POSTGRES = config.TestDependency(name="postgres", image="postgres:16", port=5432, env={"POSTGRES_PASSWORD": "test"})


# ---- tests ------------------------------------------------------------------------------


def test_the_test_command_runs_with_dependencies_env_and_a_fresh_run_id():
    """Each dependency is bound by name, env is set, the run id busts the cache, the exit code is kept."""
    client = dagger.Client()
    plan = make_plan(
        test=config.TestSpec(
            command=("pytest", "-q"), env={"DATABASE_URL": "postgres://postgres:5432/t"}, services=(POSTGRES,)
        )
    )
    base = built_image(client)

    container = command_container(plan, base, run_id="run-1", client=client)

    postgres_service = [
        ("container", {}),
        ("from", {"address": "postgres:16"}),
        ("withEnvVariable", {"name": "POSTGRES_PASSWORD", "value": "test"}),
        ("withExposedPort", {"port": 5432}),
        ("asService", {}),
    ]
    assert query(container) == [
        *query(base),
        ("withServiceBinding", {"alias": "postgres", "service": postgres_service}),
        ("withEnvVariable", {"name": "DATABASE_URL", "value": "postgres://postgres:5432/t"}),
        ("withEnvVariable", {"name": TEST_RUN_VARIABLE, "value": "run-1"}),
        ("withExec", {"args": ["pytest", "-q"], "expect": "ANY"}),
    ]


def test_a_test_without_a_command_has_no_command_container():
    """Asking for a command container of a stage-only test is a usage error."""
    plan = make_plan(test=config.TestSpec(stage="test"))
    with pytest.raises(UsageError, match="no test command"):
        command_container(plan, built_image(dagger.Client()), run_id="r")


async def test_passing_tests_return_their_reports_directory(engine):
    """Exit code 0: no error, and the reports directory comes from the test container."""
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(command=("pytest",), reports="/app/reports"))

    report = await run_tests(plan, built=built_image(client), stage=None, run_id="r", client=client)

    assert report.error is None
    assert isinstance(report.reports, dagger.Directory)
    (asked,) = engine.asked_for("exitCode")
    assert query(report.reports) == [*asked[:-1], ("directory", {"path": "/app/reports"})]
    assert engine.asked_for("stdout") == []


async def test_a_failing_test_command_reports_its_exit_code_output_and_keeps_reports(engine):
    """Exit code 1: a BuildError naming the command, with the output tail; reports survive."""
    engine.answers["exitCode"] = lambda q: 1
    engine.answers["stdout"] = lambda q: "collected 3 items\nFAILED tests/test_api.py::test_login\n"
    engine.answers["stderr"] = lambda q: "warning: slow\n"
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(command=("pytest", "-q"), reports="/app/reports"))

    report = await run_tests(plan, built=built_image(client), stage=None, run_id="r", client=client)

    assert report.error is not None
    assert (report.error.service, report.error.step, report.error.detail) == ("api", "test", "`pytest -q` exited 1")
    assert report.error.output_tail == (
        "stdout:\ncollected 3 items\nFAILED tests/test_api.py::test_login\nstderr:\nwarning: slow"
    )
    assert isinstance(report.reports, dagger.Directory)
    assert query(report.reports)[-1] == ("directory", {"path": "/app/reports"})


async def test_the_command_runs_in_the_test_stage_when_both_are_given(engine):
    """stage + command: the command runs on the stage image, not the runtime image."""
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(stage="test", command=("npm", "test")))
    stage = build_container(client.host().directory("/repo"), plan, target="test")

    await run_tests(plan, built=built_image(client), stage=stage, run_id="r", client=client)

    (asked,) = engine.asked_for("exitCode")
    assert ("dockerBuild", {"target": "test"}) in asked
    assert ("dockerBuild", {"target": "runtime"}) not in asked


async def test_a_stage_only_test_is_the_stage_build(engine):
    """stage alone: building the stage runs the tests; its reports come from the stage."""
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(stage="test", reports="/reports"))
    stage = build_container(client.host().directory("/repo"), plan, target="test")

    report = await run_tests(plan, built=built_image(client), stage=stage, run_id="r", client=client)

    assert report.error is None
    assert [q[:-1] for q in engine.asked_for("sync")] == [query(stage)]
    assert isinstance(report.reports, dagger.Directory)
    assert query(report.reports) == [*query(stage), ("directory", {"path": "/reports"})]


async def test_a_failing_test_stage_names_the_stage_and_the_failing_step(engine):
    """A RUN in the test stage failing is a test failure with that command and its output."""
    engine.answers["sync"] = lambda q: exec_error(["/bin/sh", "-c", "npm test"], 1, stderr="1 failing")
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(stage="test"))
    stage = build_container(client.host().directory("/repo"), plan, target="test")

    report = await run_tests(plan, built=built_image(client), stage=stage, run_id="r", client=client)

    assert report.error is not None
    assert report.error.detail == "stage 'test': `/bin/sh -c npm test` exited 1"
    assert "stderr:\n1 failing" in report.error.output_tail
    assert report.reports is None


async def test_tests_that_run_too_long_time_out(engine):
    """A test that never ends is stopped at its timeout and reported as timed out."""

    async def never(q: Query) -> int:
        await anyio.sleep_forever()
        return 0

    engine.answers["exitCode"] = never
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(command=("pytest",), timeout_s=0.01))

    report = await run_tests(plan, built=built_image(client), stage=None, run_id="r", client=client)

    assert report.error is not None
    assert str(report.error) == "api: test failed: timed out after 0.01s"


async def test_each_test_run_gets_a_new_run_id(engine):
    """The engine passes a fresh PIPELINE_TEST_RUN every time, so tests are never a cache hit."""
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(command=("pytest",)))
    images = DaggerImageEngine(client.host().directory("/repo"), client=client)
    built = await images.build(plan)

    await images.test(plan, built)
    await images.test(plan, built)

    run_ids = [
        args["value"] for q in engine.asked_for("exitCode") for name, args in q if args.get("name") == TEST_RUN_VARIABLE
    ]
    assert len(run_ids) == 2
    assert run_ids[0] != run_ids[1]


# ---- smoke ------------------------------------------------------------------------------

SMOKE = config.SmokeCheck(port=8001, path="/health", expect_status=200, timeout_s=60)


def test_the_smoke_prober_polls_the_booted_image_from_a_busybox_container():
    """The image runs as a service with its own command; the prober binds it as 'app' and polls."""
    client = dagger.Client()
    built = built_image(client)

    prober = smoke_prober(make_plan(smoke=SMOKE), built, run_id="run-7", client=client)

    app_service = [*query(built), ("withExposedPort", {"port": 8001}), ("asService", {})]
    assert query(prober) == [
        ("container", {}),
        ("from", {"address": "busybox:1.36"}),
        ("withServiceBinding", {"alias": "app", "service": app_service}),
        ("withEnvVariable", {"name": SMOKE_RUN_VARIABLE, "value": "run-7"}),
        (
            "withExec",
            {"args": ["sh", "-c", PROBE_SCRIPT, "probe", "http://app:8001/health", "200", "60"], "expect": "ANY"},
        ),
    ]


def test_the_image_itself_can_be_the_prober():
    """prober_image='self' probes from the built image, for engines that cannot pull busybox."""
    client = dagger.Client()
    built = built_image(client)
    prober = smoke_prober(make_plan(smoke=SMOKE), built, prober_image="self", run_id="r", client=client)
    assert query(prober)[: len(query(built))] == query(built)
    assert query(prober)[len(query(built))][0] == "withServiceBinding"


def test_an_empty_prober_image_is_refused():
    """An empty prober image is a usage error that names the choices."""
    with pytest.raises(UsageError, match="pass an image with sh and wget, or 'self'"):
        smoke_prober(make_plan(smoke=SMOKE), built_image(dagger.Client()), prober_image="", run_id="r")


async def test_a_service_that_answers_passes_the_smoke_check(engine):
    """Exit code 0 from the prober: the check passes without reading output."""
    client = dagger.Client()
    await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)
    assert len(engine.asked_for("exitCode")) == 1
    assert engine.asked_for("stderr") == []


async def test_a_service_that_never_answers_fails_with_the_last_result(engine):
    """The prober gives up: the error says what was expected where, with the prober's last line."""
    engine.answers["exitCode"] = lambda q: 1
    engine.answers["stderr"] = lambda q: (
        "smoke: http://app:8001/health did not answer 200 within 60s; last result: HTTP 503\n"
    )
    client = dagger.Client()

    with pytest.raises(BuildError) as caught:
        await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)

    assert (caught.value.service, caught.value.step) == ("api", "smoke")
    assert caught.value.detail == "did not answer 200 on :8001/health within 60s"
    assert "last result: HTTP 503" in caught.value.output_tail


async def test_a_service_that_crashes_on_boot_fails_with_its_output(engine):
    """Dagger reports the service exited before its port opened: the output is the tail."""
    engine.answers["exitCode"] = lambda q: query_error("exited: exit status 1\noutput: Error: DATABASE_URL is not set")
    client = dagger.Client()

    with pytest.raises(BuildError) as caught:
        await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)

    assert caught.value.detail == "did not answer 200 on :8001/health within 60s: exited: exit status 1"
    assert caught.value.output_tail == "output: Error: DATABASE_URL is not set"


async def test_a_service_process_failing_reports_its_exit_code(engine):
    """An ExecError of the service itself names its exit code and keeps its output."""
    engine.answers["exitCode"] = lambda q: exec_error(["/app/server"], 2, stderr="panic: bind: address in use")
    client = dagger.Client()

    with pytest.raises(BuildError) as caught:
        await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)

    assert caught.value.detail.endswith(": it exited 2")
    assert "panic: bind: address in use" in caught.value.output_tail


async def test_a_prober_killed_by_a_signal_is_not_blamed_on_the_service(engine):
    """Exit codes 128-191 escape ReturnType.ANY as ExecError: a killed prober says so."""
    engine.answers["exitCode"] = lambda q: exec_error(["sh", "-c", PROBE_SCRIPT, "probe"], 143)
    client = dagger.Client()

    with pytest.raises(BuildError) as caught:
        await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)

    assert caught.value.detail.endswith(": the prober was killed by SIGTERM")


async def test_a_service_started_by_sh_is_not_taken_for_the_prober(engine):
    """Only the probe script is the prober: an entrypoint of `sh -c ...` killed by a signal is the service."""
    engine.answers["exitCode"] = lambda q: exec_error(["sh", "-c", "exec /app/server"], 143)
    client = dagger.Client()

    with pytest.raises(BuildError) as caught:
        await run_smoke(make_plan(smoke=SMOKE), built_image(client), run_id="r", client=client)

    assert caught.value.detail.endswith(": it was killed by SIGTERM")


async def test_a_test_command_killed_for_memory_says_so(engine):
    """A test run killed by SIGKILL (137) is named as such, not as a failing build step."""
    engine.answers["exitCode"] = lambda q: exec_error(["pytest", "-q"], 137, stdout="collected 900 items")
    client = dagger.Client()
    plan = make_plan(test=config.TestSpec(command=("pytest", "-q"), reports="/reports"))

    report = await run_tests(plan, built=built_image(client), stage=None, run_id="r", client=client)

    assert report.error is not None
    assert report.error.detail == "`pytest -q` was killed by SIGKILL (often: out of memory)"
    assert "collected 900 items" in report.error.output_tail
    assert report.reports is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "exited 0"),
        (1, "exited 1"),
        (128, "exited 128"),
        (130, "was killed by SIGINT"),
        (137, "was killed by SIGKILL (often: out of memory)"),
        (191, "was killed by signal 63"),
        (192, "exited 192"),
    ],
)
def test_exit_codes_read_as_exits_or_signals(code, words):
    """128 + n is signal n, the range Dagger reports as an error even under ANY."""
    assert ended(code) == words


async def test_a_smoke_check_that_hangs_stops_at_its_timeout(engine):
    """A service whose port never opens is stopped at the smoke timeout."""

    async def never(q: Query) -> int:
        await anyio.sleep_forever()
        return 0

    engine.answers["exitCode"] = never
    plan = make_plan(smoke=config.SmokeCheck(port=8001, path="/health", timeout_s=0.01))

    with pytest.raises(BuildError, match=r"did not answer 200 on :8001/health within 0\.01s"):
        await check_probe(plan, smoke_prober(plan, built_image(dagger.Client()), run_id="r"), grace_s=0)


async def test_the_prober_outlasting_its_own_timeout_still_reports_its_last_answer(engine):
    """Pulling the prober and booting the service come before the script's deadline: they get room."""

    async def slow_failure(q: Query) -> int:
        await anyio.sleep(0.05)  # longer than the check's timeout, shorter than timeout + grace
        return 1

    engine.answers["exitCode"] = slow_failure
    engine.answers["stderr"] = lambda q: "smoke: http://app:8001/health did not answer 200; last result: HTTP 503\n"
    plan = make_plan(smoke=config.SmokeCheck(port=8001, path="/health", timeout_s=0.01))

    with pytest.raises(BuildError) as caught:
        await check_probe(plan, smoke_prober(plan, built_image(dagger.Client()), run_id="r"), grace_s=5)

    assert "last result: HTTP 503" in caught.value.output_tail


async def test_a_prober_without_wget_says_so(engine):
    """The probe script's 'no wget' exit code becomes a message naming the fix."""
    engine.answers["exitCode"] = lambda q: NO_WGET_EXIT
    with pytest.raises(BuildError, match="prober image has no wget"):
        await run_smoke(make_plan(smoke=SMOKE), built_image(dagger.Client()), run_id="r")


# ---- the probe script, for real ------------------------------------------------------------


# Slower than the 5 s a single try was once capped at: only the time left may bound a try.
SLOW_ANSWER_S = 6


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_ANSWER_S)
        status = {"/health": 200, "/empty": 204, "/slow": 200}.get(self.path, 503)
        self.send_response(status)
        self.end_headers()
        if status != 204:
            self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _busybox_bin(tmp_path: Path) -> tuple[str, dict[str, str]]:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        pytest.skip("busybox not installed: apt-get install busybox-static")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    subprocess.run([busybox, "--install", "-s", str(bin_dir)], check=True)
    return str(bin_dir / "sh"), {"PATH": str(bin_dir)}


def _dash_with_gnu_wget() -> tuple[str, dict[str, str]]:
    if not (shutil.which("dash") and shutil.which("wget")):
        pytest.skip("dash and GNU wget not installed")
    return str(shutil.which("dash")), {"PATH": "/usr/bin:/bin"}


@pytest.fixture(params=["busybox", "dash+gnu-wget"])
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    return _busybox_bin(tmp_path) if request.param == "busybox" else _dash_with_gnu_wget()


def probe(shell: tuple[str, dict[str, str]], url: str, expect: int, timeout: int) -> subprocess.CompletedProcess[str]:
    sh, env = shell
    return subprocess.run(
        [sh, "-c", PROBE_SCRIPT, "probe", url, str(expect), str(timeout)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_probe_passes_when_the_expected_status_answers(shell, http_server):
    """200 on /health: exit 0 and one line saying so."""
    result = probe(shell, f"{http_server}/health", 200, 5)
    assert result.returncode == 0
    assert result.stdout == f"smoke: {http_server}/health answered 200\n"


def test_the_probe_accepts_any_expected_status(shell, http_server):
    """A check may expect another status, such as 204."""
    assert probe(shell, f"{http_server}/empty", 204, 5).returncode == 0


def test_the_probe_gives_up_with_the_last_status(shell, http_server):
    """A 503 until the deadline: exit 1, naming the last status seen."""
    result = probe(shell, f"{http_server}/unready", 200, 1)
    assert result.returncode == 1
    assert f"{http_server}/unready did not answer 200 within 1s; last result: HTTP 503" in result.stderr


def test_the_probe_reports_a_refused_connection(shell):
    """Nothing listening: the last result is wget's connection error."""
    result = probe(shell, "http://127.0.0.1:9/health", 200, 1)
    assert result.returncode == 1
    assert "last result:" in result.stderr
    assert "HTTP" not in result.stderr.split("last result:")[1]


def test_the_probe_gives_up_on_a_server_that_never_answers(shell):
    """A socket that accepts and stays silent: each try is bounded, so the deadline holds."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        result = probe(shell, url, 200, 2)
    assert result.returncode == 1
    assert f"{url} did not answer 200 within 2s" in result.stderr


def test_a_slow_endpoint_within_the_deadline_passes(shell, http_server):
    """An answer that takes longer than a poll interval still counts if it comes in time."""
    result = probe(shell, f"{http_server}/slow", 200, 15)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"smoke: {http_server}/slow answered 200\n"


def test_the_probe_without_wget_exits_with_its_own_code():
    """No wget on PATH: exit NO_WGET_EXIT with a message, before any request."""
    sh = shutil.which("dash")
    if sh is None:
        pytest.skip("dash not installed")
    result = subprocess.run(
        [sh, "-c", PROBE_SCRIPT, "probe", "http://127.0.0.1:9/", "200", "1"],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent"},
        timeout=60,
        check=False,
    )
    assert result.returncode == NO_WGET_EXIT
    assert "has no wget" in result.stderr
