"""Dagger recipes for a service's tests and its smoke check, run before publishing.

Tests (``[services.X.test]``) run one of three ways:

* ``stage`` only: the Dockerfile stage is built, and its ``RUN`` steps are the tests.
* ``command``: the command runs in the built image (or in the ``stage`` image when
  both are given), with ``env`` set and each ``[[test.services]]`` container bound
  under its name, so ``postgres:5432`` resolves from inside the test.
* Either way, ``reports`` names a directory (JUnit XML, coverage) that is handed back
  even when the tests fail, so CI can show what failed.

A test command gets a fresh ``PIPELINE_TEST_RUN`` value on every run. It is an
ordinary variable on purpose: it changes the exec's cache key, so the tests really
run again instead of replaying a cached result. (``with_volatile_variable`` would
do the opposite: it exists to keep the cache.)

The smoke check boots the built image as a Dagger service with its own entrypoint
and command, and a prober container bound to it as ``app`` polls
``http://app:<port><path>`` with ``wget`` until it answers the expected status or the
check's timeout passes. The prober image is ``busybox:1.36`` by default; ``self``
reuses the built image instead (it must have ``sh`` and ``wget``), which suits
registries that cannot reach Docker Hub. A service that crashes on boot fails the
check at once: Dagger reports that it exited, with its output.
"""

from __future__ import annotations

import math
import signal

import anyio
import dagger
from dagger import dag

from pipeline.config import TestDependency
from pipeline.errors import BuildError, UsageError
from pipeline.fanout import exec_output, tail
from pipeline.images import TestReport
from pipeline.plan import ServicePlan

DEFAULT_PROBER_IMAGE = "busybox:1.36"
PROBER_SELF = "self"
SMOKE_ALIAS = "app"
TEST_RUN_VARIABLE = "PIPELINE_TEST_RUN"
SMOKE_RUN_VARIABLE = "PIPELINE_SMOKE_RUN"
# Exit code the probe script uses when the prober image has no wget.
NO_WGET_EXIT = 3
# The probe script's own deadline starts only once the service's port is open; before
# that the engine pulls the prober image and boots the service. The outer deadline
# leaves this much room for that, so a service that answers the wrong status is
# reported with its last answer instead of a bare timeout.
SMOKE_START_GRACE_S = 60.0

# Polls until the service answers the expected status or the deadline passes.
# Arguments: $1 URL, $2 expected status, $3 timeout in whole seconds. wget -S prints
# the status line of every response (also of redirects) to stderr; the last wins.
PROBE_SCRIPT = r"""
url="$1"; expect="$2"; timeout="$3"
if ! command -v wget >/dev/null 2>&1; then
  echo "the smoke prober image has no wget: choose another prober image" >&2
  exit 3
fi
start=$(date +%s)
last="no answer"
# Each try gets the time left, no more: wget would otherwise wait 15 minutes on a socket
# that never answers. Not with wget -T, which crashes Debian's static busybox 1.35.
has_timeout=""; command -v timeout >/dev/null 2>&1 && has_timeout=1
while :; do
  left=$(( timeout - ($(date +%s) - start) )); [ "$left" -lt 1 ] && left=1
  bounded=""; [ -n "$has_timeout" ] && bounded="timeout $left"
  out=$($bounded wget -q -S -O /dev/null "$url" 2>&1)
  status=$(printf '%s\n' "$out" | sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' | tail -n 1)
  if [ "$status" = "$expect" ]; then
    echo "smoke: $url answered $status"
    exit 0
  fi
  if [ -n "$status" ]; then
    last="HTTP $status"
  else
    last=$(printf '%s\n' "$out" | tail -n 1)
  fi
  if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
    break
  fi
  sleep 1
done
echo "smoke: $url did not answer $expect within ${timeout}s; last result: ${last:-no answer}" >&2
exit 1
"""


def dependency_service(dependency: TestDependency, *, client: dagger.Client = dag) -> dagger.Service:
    """A test's service container (a database, a cache), started from its image."""
    container = client.container().from_(dependency.image)
    for name, value in dependency.env.items():
        container = container.with_env_variable(name, value)
    return container.with_exposed_port(dependency.port).as_service()


def command_container(
    plan: ServicePlan, base: dagger.Container, *, run_id: str, client: dagger.Client = dag
) -> dagger.Container:
    """The container that runs the test command: dependencies bound, env set, exit code kept."""
    spec = plan.service.test
    if spec is None or not spec.command:
        raise UsageError(f"{plan.name}: no test command in services.toml ([services.{plan.name}.test] command)")
    container = base
    for dependency in spec.services:
        container = container.with_service_binding(dependency.name, dependency_service(dependency, client=client))
    for name, value in spec.env.items():
        container = container.with_env_variable(name, value)
    container = container.with_env_variable(TEST_RUN_VARIABLE, run_id)
    # ANY keeps a failing run's container, so its output and reports can be read.
    return container.with_exec(list(spec.command), expect=dagger.ReturnType.ANY)


async def run_tests(
    plan: ServicePlan,
    *,
    built: dagger.Container,
    stage: dagger.Container | None,
    run_id: str,
    client: dagger.Client = dag,
) -> TestReport:
    """Run a service's tests within their timeout; a failure is reported, not raised."""
    spec = plan.service.test
    if spec is None:
        raise UsageError(f"{plan.name}: no [services.{plan.name}.test] in services.toml")
    try:
        with anyio.fail_after(spec.timeout_s):
            if not spec.command:
                assert stage is not None  # config validation: a test has a stage or a command
                return await _stage_tests(plan, stage, spec.reports)
            container = command_container(plan, stage if stage is not None else built, run_id=run_id, client=client)
            return await _command_tests(plan, container, spec.reports)
    except TimeoutError:
        return TestReport(error=BuildError(plan.name, "test", f"timed out after {spec.timeout_s:g}s"))


def ended(code: int) -> str:
    """How a command ended, in words: ``exited 1``, or ``was killed by SIGKILL (often: out of memory)``.

    Exit codes 128-191 mean a signal, and Dagger raises ExecError for them even under
    ReturnType.ANY: a test killed for memory must not read as a failing build step.
    """
    if not 128 < code < 192:
        return f"exited {code}"
    try:
        name = signal.Signals(code - 128).name
    except ValueError:
        name = f"signal {code - 128}"
    return f"was killed by {name}" + (" (often: out of memory)" if code - 128 == signal.SIGKILL else "")


async def _stage_tests(plan: ServicePlan, stage: dagger.Container, reports: str) -> TestReport:
    """Build the test stage: its RUN steps are the tests."""
    try:
        await stage.sync()
    except dagger.ExecError as e:
        command = " ".join(e.command)
        target = plan.service.test.stage if plan.service.test else ""
        return TestReport(
            error=BuildError(plan.name, "test", f"stage '{target}': `{command}` {ended(e.exit_code)}", exec_output(e))
        )
    return TestReport(reports=stage.directory(reports) if reports else None)


async def _command_tests(plan: ServicePlan, container: dagger.Container, reports: str) -> TestReport:
    """Run the test command and read its exit code; output only when it failed."""
    command = " ".join(plan.service.test.command if plan.service.test else ())
    try:
        code = await container.exit_code()
    except dagger.ExecError as e:
        # A RUN step of the test stage under it failed, or the command itself was killed
        # by a signal (which ANY does not cover; its reports are lost with it).
        return TestReport(
            error=BuildError(plan.name, "test", f"`{' '.join(e.command)}` {ended(e.exit_code)}", exec_output(e))
        )
    directory = container.directory(reports) if reports else None
    if code == 0:
        return TestReport(reports=directory)
    output = await output_tail(container)
    return TestReport(error=BuildError(plan.name, "test", f"`{command}` exited {code}", output), reports=directory)


async def output_tail(container: dagger.Container) -> str:
    """The tails of the last command's stdout and stderr, labelled."""
    parts = []
    stdout, stderr = await container.stdout(), await container.stderr()
    if stdout.strip():
        parts.append("stdout:\n" + tail(stdout))
    if stderr.strip():
        parts.append("stderr:\n" + tail(stderr))
    return "\n".join(parts)


def smoke_prober(
    plan: ServicePlan,
    built: dagger.Container,
    *,
    prober_image: str = DEFAULT_PROBER_IMAGE,
    run_id: str,
    client: dagger.Client = dag,
) -> dagger.Container:
    """A prober bound to the booted image that polls its health URL until the timeout."""
    smoke = plan.service.smoke
    if smoke is None:
        raise UsageError(f"{plan.name}: no [services.{plan.name}.smoke] in services.toml")
    if not prober_image:
        raise UsageError(f"the smoke prober image is empty: pass an image with sh and wget, or '{PROBER_SELF}'")
    # No args: the service runs the image's own entrypoint and command, as in production.
    app = built.with_exposed_port(smoke.port).as_service()
    prober = built if prober_image == PROBER_SELF else client.container().from_(prober_image)
    url = f"http://{SMOKE_ALIAS}:{smoke.port}{smoke.path}"
    return (
        prober.with_service_binding(SMOKE_ALIAS, app)
        .with_env_variable(SMOKE_RUN_VARIABLE, run_id)
        .with_exec(
            ["sh", "-c", PROBE_SCRIPT, "probe", url, str(smoke.expect_status), str(math.ceil(smoke.timeout_s))],
            expect=dagger.ReturnType.ANY,
        )
    )


async def run_smoke(
    plan: ServicePlan,
    built: dagger.Container,
    *,
    prober_image: str = DEFAULT_PROBER_IMAGE,
    run_id: str,
    client: dagger.Client = dag,
) -> None:
    """Boot the image and probe it; raise BuildError(step="smoke") unless it answers in time."""
    smoke = plan.service.smoke
    if smoke is None:
        raise UsageError(f"{plan.name}: no [services.{plan.name}.smoke] in services.toml")
    prober = smoke_prober(plan, built, prober_image=prober_image, run_id=run_id, client=client)
    await check_probe(plan, prober)


async def check_probe(plan: ServicePlan, prober: dagger.Container, *, grace_s: float = SMOKE_START_GRACE_S) -> None:
    """Await the prober and turn each way it can fail into one BuildError."""
    smoke = plan.service.smoke
    assert smoke is not None  # callers build the prober from the smoke check
    what = f"did not answer {smoke.expect_status} on :{smoke.port}{smoke.path} within {smoke.timeout_s:g}s"
    try:
        # A port that never opens hangs the engine's wait: this deadline ends it.
        with anyio.fail_after(smoke.timeout_s + grace_s):
            code = await prober.exit_code()
            output = await output_tail(prober) if code != 0 else ""
    except TimeoutError:
        raise BuildError(plan.name, "smoke", what) from None
    except dagger.ExecError as e:
        # The service's own process failed, or the prober was killed by a signal.
        who = "the prober" if PROBE_SCRIPT in e.command else "it"
        raise BuildError(plan.name, "smoke", f"{what}: {who} {ended(e.exit_code)}", exec_output(e)) from None
    except dagger.QueryError as e:
        # Dagger says the service exited before its port opened, with its output.
        lines = str(e).strip().splitlines() or ["the engine refused the smoke check"]
        raise BuildError(plan.name, "smoke", f"{what}: {lines[0]}", tail("\n".join(lines[1:]))) from None
    if code == NO_WGET_EXIT:
        raise BuildError(plan.name, "smoke", "the prober image has no wget; pass another --smoke-prober", output)
    if code != 0:
        raise BuildError(plan.name, "smoke", what, output)
