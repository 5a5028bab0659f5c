"""Tests for pipeline.deploy: env pinning, Dokploy's real deployment record, health gates, rollback.

Everything runs against the Dokploy double and the VPS double on loopback, with
durations scaled to tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from pipeline import deploy as deploy_module
from pipeline.config import Config, DokployTarget, parse
from pipeline.deploy import (
    GroupResult,
    check_reference,
    deploy_and_wait,
    deploy_groups,
)
from pipeline.dokploy import DokployClient
from pipeline.errors import ConfigError, DeploymentError, DeploymentTimeoutError, UsageError
from tests.support.dokploy_double import (
    BACKEND_ENV,
    BACKEND_ID,
    ERROR_TAIL,
    FRONTEND_ENV,
    FRONTEND_ID,
    IMAGE_PREFIX,
    OLD_TAG,
    DokployDouble,
    RunningDokploy,
    RunningVps,
    http_client,
    install_bizosaas,
    pinned,
    services_toml,
)

POLL = 0.005
FAST = {"poll_interval_s": POLL, "deploy_timeout_s": 3.0, "health_interval_s": POLL}
OLD_BRAIN = f"{IMAGE_PREFIX}brain-gateway:{OLD_TAG}"
NEW_PINS = {
    "brain-gateway": pinned("brain-gateway", "1"),
    "bizoholic-frontend": pinned("bizoholic-frontend", "2"),
    "client-portal": pinned("client-portal", "3"),
}


@dataclass
class World:
    """The doubles, a client on them, and the services.toml that points at them."""

    dokploy: RunningDokploy
    vps: RunningVps
    config: Config
    client: DokployClient
    http: httpx.AsyncClient
    events: list[str]

    @property
    def double(self) -> DokployDouble:
        return self.dokploy.double

    async def deploy(self, pins: dict[str, str] | None = None, **kwargs: Any) -> list[GroupResult]:
        options = {**FAST, **kwargs}
        return await deploy_groups(
            self.config,
            "staging",
            NEW_PINS if pins is None else pins,
            client=self.client,
            http=self.http,
            on_event=self.events.append,
            **options,
        )

    def writes(self) -> list[str]:
        return [r.procedure for r in self.double.requests if r.method == "POST"]


@pytest.fixture
async def world(dokploy, vps):
    install_bizosaas(dokploy.double, vps.vps)
    async with http_client() as http:
        config = parse(services_toml(dokploy.url, vps.url, health_timeout_s=0.3), file="services.toml")
        yield World(dokploy, vps, config, dokploy.client(http), http, [])


def backend() -> DokployTarget:
    return DokployTarget(kind="compose", id=BACKEND_ID)


# -- env pinning -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        (pinned("brain-gateway"), ""),
        ("ghcr.io/acme/api:main-abc1234", ""),
        ("localhost:5000/acme/api:1@sha256:" + "0" * 64, ""),
        ("ghcr.io/acme/api", "neither a tag nor a digest"),
        ("ghcr.io/acme/api:latest", "moving tag 'latest'"),
        ("ghcr.io/acme/api:1\nEVIL=1", "not an image reference"),
        ("ghcr.io/Acme/api:1", "not an image reference"),
    ],
)
def test_check_reference(reference, problem):
    """Only digest- or tag-pinned references are deployable; newlines and moving tags are refused."""
    if problem:
        assert problem in check_reference(reference)
    else:
        assert check_reference(reference) == ""


# -- one deployment ------------------------------------------------------------


async def test_deploy_and_wait_succeeds_only_on_our_done_row(world):
    """The returned row is the new one, done, with the title we sent; older rows are ignored."""
    await deploy_and_wait(world.client, backend(), title="warm-up", poll_interval_s=POLL, timeout_s=3)
    row = await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)
    assert (row.status, row.title) == ("done", "ours")
    assert [r.title for r in world.double.history(BACKEND_ID)] == ["ours", "warm-up"]


@pytest.mark.parametrize("queue_list", [True, False], ids=["v0.30", "before-queueList"])
async def test_stale_done_status_does_not_fool_it(world, queue_list):
    """While our job waits behind another, composeStatus and the old rows say 'done'; we wait for our own row."""
    if not queue_list:
        world.double.remove_procedure("deployment.queueList")
    await deploy_and_wait(world.client, backend(), title="earlier", poll_interval_s=POLL, timeout_s=3)
    world.double.add_compose(compose_id="blocker", status="done")
    world.double.set_duration("blocker", 0.15)
    await world.client.trigger(DokployTarget(kind="compose", id="blocker"), title="someone else")
    seen_while_queued: list[str] = []

    def progress(row):
        if row is None:
            seen_while_queued.append(world.double.composes[BACKEND_ID].status)

    result = await deploy_and_wait(
        world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3, on_progress=progress
    )
    assert seen_while_queued == ["done"]  # the trap was armed
    assert result.status == "done"
    assert world.double.history("blocker")[0].status == "done"  # FIFO: ours ran after it
    assert world.double.history(BACKEND_ID)[0].id == result.id
    assert result.title == "ours"


@pytest.mark.parametrize("queue_list", [True, False], ids=["v0.30", "before-queueList"])
async def test_a_foreign_deployment_queued_before_ours_is_not_taken_for_ours(world, queue_list):
    """Another deploy of the same compose, queued earlier and failing, does not decide our result."""
    if not queue_list:
        world.double.remove_procedure("deployment.queueList")
        # Without queueList nothing tells "our job is taken, its row not yet written"
        # from "our row is the newest": that window is closed only where the queue is readable.
        world.double.row_delay_s = 0
    world.double.add_compose(compose_id="blocker")
    world.double.set_duration("blocker", 0.05)
    world.double.script(BACKEND_ID, "error")
    await world.client.trigger(DokployTarget(kind="compose", id="blocker"), title="blocker")
    await world.client.trigger(backend(), title="Manual deployment")
    row = await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)
    assert (row.title, row.status) == ("ours", "done")
    assert [r.status for r in world.double.history(BACKEND_ID)] == ["done", "error"]


async def test_a_foreign_row_is_not_ours_while_our_job_is_taken_but_has_no_row_yet(world):
    """Between the worker taking our job and inserting its row, the newest new row is someone else's."""
    world.double.row_delay_s = 0.1
    world.double.script(BACKEND_ID, "error")
    await world.client.trigger(backend(), title="Manual deployment")
    row = await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)
    assert (row.title, row.status) == ("ours", "done")
    assert [r.status for r in world.double.history(BACKEND_ID)] == ["done", "error"]


async def test_a_deployment_queued_after_ours_does_not_decide_our_result(world):
    """Someone deploys the same compose while ours runs; theirs fails after ours is done: ours is done."""
    world.double.remove_procedure("deployment.queueList")
    world.double.script(BACKEND_ID, "done", "error")

    def someone_clicks_deploy(row):
        if row is not None and row.status == "running" and len(world.double.history(BACKEND_ID)) == 1:
            world.double.click_deploy(BACKEND_ID)

    row = await deploy_and_wait(
        world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3, on_progress=someone_clicks_deploy
    )
    assert (row.title, row.status) == ("ours", "done")
    assert [r.title for r in world.double.history(BACKEND_ID)] == ["Manual deployment", "ours"]


async def test_git_source_rows_renamed_after_build_still_count(world):
    """A git source's row gets the commit message as title once built; it is still recognised as ours."""
    world.double.composes[BACKEND_ID].git_commit = ("feat: faster brain", "0123abc")
    world.double.composes[BACKEND_ID].source_type = "github"
    row = await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)
    assert (row.status, row.title) == ("done", "feat: faster brain")


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("error", ["Error response from daemon: manifest unknown", ERROR_TAIL]),
        ("cancelled", ["Dokploy restarted: deployment cancelled", "cancels deployments that were running"]),
        ("broken", ["errorMessage: An error have occurred: ENOSPC"]),
    ],
)
async def test_failed_rows_raise_with_the_log_tail(world, outcome, expected):
    """error, cancelled and row-creation failures raise DeploymentError carrying Dokploy's log tail."""
    world.double.script(BACKEND_ID, outcome)
    with pytest.raises(DeploymentError) as caught:
        await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)
    error = caught.value
    assert error.status == ("cancelled" if outcome == "cancelled" else "error")
    assert error.deployment_id == world.double.history(BACKEND_ID)[0].id
    assert str(error).startswith(f"compose {BACKEND_ID}: deployment {error.deployment_id} ended with status")
    for text in expected:
        assert text in error.log_tail


async def test_missing_read_logs_still_reports_the_failure(world):
    """On a Dokploy without readLogs, the failure is still raised, saying the logs are unavailable."""
    world.double.remove_procedure("deployment.readLogs")
    world.double.script(BACKEND_ID, "error")
    with pytest.raises(DeploymentError, match="logs unavailable"):
        await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=3)


async def test_stuck_deployment_times_out_naming_the_row(world):
    """A row stuck in 'running' ends in DeploymentTimeoutError naming it and the way out."""
    world.double.script(BACKEND_ID, "stuck")
    with pytest.raises(DeploymentTimeoutError) as caught:
        await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=0.1)
    row = world.double.history(BACKEND_ID)[0]
    assert str(caught.value) == (
        f"compose {BACKEND_ID} deployment {row.id} still running after 0.1s; Dokploy deployments can hang "
        "in 'running' (restart Dokploy or cancel it in the UI)"
    )


async def test_deployment_stuck_in_the_queue_times_out_as_not_started(world):
    """Behind another service's stuck deployment, ours never starts: 'not started: still queued'."""
    world.double.add_compose(compose_id="hog")
    world.double.script("hog", "stuck")
    await world.client.trigger(DokployTarget(kind="compose", id="hog"), title="hog")
    with pytest.raises(DeploymentTimeoutError, match=r"deployment not started: still queued still queued after 0\.1s"):
        await deploy_and_wait(world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=0.1)


async def test_deployment_lost_in_a_restart_says_so(world):
    """A queued job lost when Dokploy restarts is reported as never started and no longer queued."""
    world.double.add_compose(compose_id="hog")
    world.double.script("hog", "stuck")
    await world.client.trigger(DokployTarget(kind="compose", id="hog"), title="hog")

    def restart_once_queued(row):
        if row is None:
            world.double.restart()

    with pytest.raises(DeploymentTimeoutError, match="never started and is no longer in Dokploy's queue"):
        await deploy_and_wait(
            world.client, backend(), title="ours", poll_interval_s=POLL, timeout_s=0.1, on_progress=restart_once_queued
        )


async def test_deadline_is_measured_on_the_injected_clock(world):
    """With a clock that jumps past the deadline, the wait gives up after one poll."""
    world.double.script(BACKEND_ID, "stuck")
    ticks = iter(range(0, 100_000, 1000))
    with pytest.raises(DeploymentTimeoutError, match=r"after 600s"):
        await deploy_and_wait(
            world.client, backend(), title="t", poll_interval_s=POLL, timeout_s=600, clock=lambda: next(ticks)
        )
    assert len(world.double.calls("deployment.allByCompose")) == 2  # the baseline and one poll


# -- groups --------------------------------------------------------------------


async def test_groups_deploy_pinned_and_healthy(world):
    """Both groups pin their images, reach done, pass health; only the image lines of the env changed."""
    results = await world.deploy()
    assert [(r.group, r.status, r.ok, r.rolled_back) for r in results] == [
        ("backend", "done", True, "no"),
        ("frontend", "done", True, "no"),
    ]
    assert world.double.env(BACKEND_ID) == BACKEND_ENV.replace(OLD_BRAIN, NEW_PINS["brain-gateway"])
    assert world.double.env(FRONTEND_ID) == (
        f"BIZOHOLIC_FRONTEND_IMAGE={NEW_PINS['bizoholic-frontend']}\r\n"
        f"CLIENT_PORTAL_IMAGE='{NEW_PINS['client-portal']}'\r\n"
        "NEXT_PUBLIC_API_URL=https://api.bizoholic.test\r\n"
    )
    backend_result = results[0]
    assert backend_result.pinned == {"brain-gateway": NEW_PINS["brain-gateway"]}
    assert backend_result.previous == {"brain-gateway": OLD_BRAIN}
    assert backend_result.deployment_id == world.double.history(BACKEND_ID)[0].id
    assert [h.ok for h in results[1].health] == [True, True]
    assert world.double.live[BACKEND_ID]["BRAIN_GATEWAY_IMAGE"] == NEW_PINS["brain-gateway"]
    assert any("BRAIN_GATEWAY_IMAGE" in e and "->" in e for e in world.events)


async def test_second_group_starts_only_after_the_first_is_healthy(world):
    """No frontend write or deploy reaches Dokploy before the backend health check has answered 200."""
    await world.deploy()
    healthy = [seq for seq, path, status in world.vps.vps.requests if path == "/backend/health" and status == 200]
    frontend = [r.seq for r in world.double.requests if r.method == "POST" and FRONTEND_ID in str(r.body)]
    backend_done = world.double.history(BACKEND_ID)
    assert healthy
    assert frontend
    assert max(healthy) < min(frontend)
    assert backend_done[0].status == "done"


async def test_failed_health_gate_rolls_back_and_reverifies(world):
    """A new image that fails health is replaced by the previous one, redeployed and re-checked; frontend untouched."""
    world.vps.vps.mark_bad(NEW_PINS["brain-gateway"])
    results = await world.deploy()
    first, second = results
    assert (first.status, first.rolled_back, first.rollback_error) == ("error", "yes, healthy", "")
    assert "is done, but health check" in first.error
    assert world.double.env(BACKEND_ID) == BACKEND_ENV  # restored byte for byte
    assert world.double.live[BACKEND_ID]["BRAIN_GATEWAY_IMAGE"] == OLD_BRAIN
    assert [r.status for r in world.double.history(BACKEND_ID)] == ["done", "done"]  # the rollback, the deploy
    assert (second.status, second.error) == (
        "skipped",
        "not deployed: group 'backend' failed (error), and groups deploy in order",
    )
    assert world.double.env(FRONTEND_ID) == FRONTEND_ENV
    assert not world.double.calls("compose.deploy")[2:]  # only the deploy and the rollback
    assert world.dokploy.api_key not in "\n".join(world.events) + repr(results)


async def test_a_surprise_in_the_health_gate_still_rolls_back(world, monkeypatch):
    """Not only our own errors: any exception after the write puts the previous images back."""
    real_check_all = deploy_module.check_all
    calls = 0

    async def surprising_check_all(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # as a probe task would fail: inside a task group, so wrapped in an ExceptionGroup

            async def probe_with_a_bug() -> None:
                raise ValueError("a bug in a probe")

            async with anyio.create_task_group() as group:
                group.start_soon(probe_with_a_bug)
        return await real_check_all(*args, **kwargs)

    monkeypatch.setattr(deploy_module, "check_all", surprising_check_all)
    first, second = await world.deploy()
    assert (first.status, first.rolled_back, first.rollback_error) == ("error", "yes, healthy", "")
    assert "is done, but unexpected ValueError: a bug in a probe (at test_deploy.py:" in first.error
    assert world.double.env(BACKEND_ID) == BACKEND_ENV
    assert world.double.live[BACKEND_ID]["BRAIN_GATEWAY_IMAGE"] == OLD_BRAIN
    assert second.status == "skipped"


async def test_failed_deployment_rolls_back(world):
    """A deployment that ends in error restores the env and redeploys the previous image."""
    world.double.script(BACKEND_ID, "error")
    first, second = await world.deploy()
    assert (first.status, first.rolled_back) == ("error", "yes, healthy")
    assert ERROR_TAIL in first.error
    assert world.double.env(BACKEND_ID) == BACKEND_ENV
    assert second.status == "skipped"


async def test_rollback_that_fails_is_reported(world):
    """When the previous image is unhealthy too, the rollback outcome says so with its own error."""
    world.vps.vps.mark_bad(NEW_PINS["brain-gateway"], OLD_BRAIN)
    first, _ = await world.deploy()
    assert first.rolled_back == "yes, failed"
    assert "health check" in first.rollback_error
    assert world.double.env(BACKEND_ID) == BACKEND_ENV


async def test_stuck_deployment_times_out_and_the_rollback_is_queued_not_awaited(world):
    """A hung deployment is a timeout; the env is restored and a rollback queued, reported as unverified."""
    world.double.script(BACKEND_ID, "stuck")
    first, second = await world.deploy(deploy_timeout_s=0.1)
    assert first.status == "timeout"
    assert first.deployment_id == world.double.history(BACKEND_ID)[0].id
    assert first.rolled_back == "yes, failed"
    assert "queue is blocked" in first.rollback_error
    assert "restart Dokploy" in first.rollback_error
    assert world.double.env(BACKEND_ID) == BACKEND_ENV  # any job that runs next deploys the old image
    assert [job.title.split(" #")[0] for job in world.double.queue] == ["pipeline rollback staging/backend"]
    assert second.status == "skipped"
    world.double.restart()  # the way out the message gives: the stuck row is cancelled
    assert world.double.history(BACKEND_ID)[0].status == "cancelled"


async def test_no_rollback_leaves_the_new_images(world):
    """With rollback off, a failure is reported and the env keeps the new images."""
    world.double.script(BACKEND_ID, "error")
    first, _ = await world.deploy(rollback=False)
    assert (first.status, first.rolled_back) == ("error", "no")
    assert "rollback disabled" in first.error
    assert NEW_PINS["brain-gateway"] in (world.double.env(BACKEND_ID) or "")


async def test_a_group_whose_build_failed_is_not_deployed_nor_anything_after(world):
    """A skipped service stops its group and every later group, before any write."""
    pins = {k: v for k, v in NEW_PINS.items() if k != "brain-gateway"}
    results = await world.deploy(pins, skip={"brain-gateway": "build failed"})
    assert [(r.status, r.error) for r in results] == [
        ("skipped", "not deployed: brain-gateway has no image (build failed)"),
        (
            "skipped",
            "not deployed: group 'backend' was not deployed (brain-gateway has no image (build failed)), "
            "and groups deploy in order",
        ),
    ]
    assert world.writes() == []


async def test_a_failed_build_in_the_last_group_still_lets_earlier_groups_deploy(world):
    """Skipping a frontend service deploys the backend and skips only the frontend."""
    pins = {k: v for k, v in NEW_PINS.items() if k != "client-portal"}
    first, second = await world.deploy(pins, skip={"client-portal": "tests failed"})
    assert (first.status, second.status) == ("done", "skipped")
    assert world.double.env(FRONTEND_ID) == FRONTEND_ENV


async def test_only_selects_groups_and_services(world):
    """With only={client-portal}, the backend is not selected (no error) and only that variable changes."""
    results = await world.deploy({"client-portal": NEW_PINS["client-portal"]}, only={"client-portal"})
    assert [(r.group, r.status, r.error) for r in results] == [("backend", "skipped", ""), ("frontend", "done", "")]
    assert world.double.env(BACKEND_ID) == BACKEND_ENV
    env = world.double.env(FRONTEND_ID) or ""
    assert f"BIZOHOLIC_FRONTEND_IMAGE={IMAGE_PREFIX}bizoholic-frontend:{OLD_TAG}\r\n" in env
    assert f"CLIENT_PORTAL_IMAGE='{NEW_PINS['client-portal']}'" in env


async def test_missing_image_variable_fails_before_any_write(world):
    """A later group's missing variable is found before the first group is touched, with the fix."""
    world.double.composes[FRONTEND_ID].env = "NEXT_PUBLIC_API_URL=x\nCLIENT_PORTAL_IMAGE=y:1\n"
    with pytest.raises(ConfigError) as caught:
        await world.deploy()
    assert str(caught.value) == (
        "services.toml: groups.frontend.targets.staging: compose frntCompose0staging1 has no "
        "BIZOHOLIC_FRONTEND_IMAGE in its environment: add BIZOHOLIC_FRONTEND_IMAGE="
        "ghcr.io/bizoholic-digital/bizosaas-bizoholic-frontend:<tag> in Dokploy and use "
        "${BIZOHOLIC_FRONTEND_IMAGE} as the image in the compose file"
    )
    assert world.writes() == []


async def test_compose_file_that_ignores_the_variable_is_refused(world):
    """A raw compose file that never uses the variable would deploy nothing new: refused up front."""
    world.double.composes[BACKEND_ID].compose_file = "services:\n  brain:\n    image: brain:latest\n"
    with pytest.raises(ConfigError, match=r"never uses \$\{BRAIN_GATEWAY_IMAGE\}"):
        await world.deploy()
    assert world.writes() == []


async def test_dry_run_reads_and_writes_nothing(world):
    """A dry run reports each pin and its previous value, and sends no POST at all."""
    results = await world.deploy(dry_run=True)
    assert [r.status for r in results] == ["dry run", "dry run"]
    assert results[0].previous == {"brain-gateway": OLD_BRAIN}
    assert results[0].pinned == {"brain-gateway": NEW_PINS["brain-gateway"]}
    assert world.writes() == []
    assert world.double.env(BACKEND_ID) == BACKEND_ENV
    assert any(e.startswith("backend: would set BRAIN_GATEWAY_IMAGE") for e in world.events)


async def test_bad_inputs_are_usage_errors_before_anything(world):
    """Unknown environments or services, moving tags and unpinned services are refused before any call."""
    with pytest.raises(UsageError, match="unknown environment 'prod'"):
        await deploy_groups(world.config, "prod", NEW_PINS, client=world.client, http=world.http)
    with pytest.raises(UsageError, match=r"pinned service nope not in services\.toml"):
        await world.deploy({**NEW_PINS, "nope": "x:1"})
    with pytest.raises(UsageError, match="moving tag 'latest'"):
        await world.deploy({**NEW_PINS, "brain-gateway": f"{IMAGE_PREFIX}brain-gateway:latest"})
    with pytest.raises(UsageError, match="no image given for client-portal"):
        await world.deploy({k: v for k, v in NEW_PINS.items() if k != "client-portal"})
    assert world.double.requests == []


async def test_group_without_a_target_is_a_config_error(world):
    """A selected group with no target for the environment names the group and the table to add."""
    text = services_toml(world.dokploy.url, world.vps.url).replace(
        f'[groups.targets.staging]\ncompose_id = "{FRONTEND_ID}"', '[groups.targets.production]\ncompose_id = "x"'
    )
    text = text.replace(
        "[environments.staging]",
        '[environments.production]\nbranch = "main"\ntags = ["{sha}"]\n\n[environments.staging]',
    )
    text = text.replace(
        '[[groups.targets.staging.health]]\nurl = "' + world.vps.url + "/bizoholic",
        '[[groups.targets.production.health]]\nurl = "' + world.vps.url + "/bizoholic",
    )
    text = text.replace(
        '[[groups.targets.staging.health]]\nurl = "' + world.vps.url + "/portal",
        '[[groups.targets.production.health]]\nurl = "' + world.vps.url + "/portal",
    )
    world.config = parse(text)
    with pytest.raises(
        ConfigError, match=r"group 'frontend' has no target for environment 'staging': add \[groups.targets.staging\]"
    ):
        await world.deploy()
    assert world.writes() == []


# -- application targets ---------------------------------------------------------


APP_TOML = """
[registry]
host = "ghcr.io"
namespace = "bizoholic-digital"
image_prefix = "bizosaas-"

[environments.staging]
branch = "staging"
tags = ["staging-{{sha}}"]

[services.client-portal]
context = "portal"

[[groups]]
name = "portal"
services = ["client-portal"]
[groups.targets.staging]
application_id = "portalApp0staging01"
[[groups.targets.staging.health]]
url = "{vps}/portal/health"
timeout = 0.3
"""


@pytest.fixture
async def app_world(dokploy, vps):
    dokploy.double.add_application(
        application_id="portalApp0staging01",
        name="portal",
        docker_image=f"{IMAGE_PREFIX}client-portal:{OLD_TAG}",
        registry_url="ghcr.io",
        username="deploy-bot",
        password="ghcr-read-token-1",
        status="done",
    )
    vps.vps.serve("/portal/health", service_id="portalApp0staging01")
    async with http_client() as http:
        yield World(dokploy, vps, parse(APP_TOML.format(vps=vps.url)), dokploy.client(http), http, [])


async def test_application_target_pins_through_the_docker_provider(app_world):
    """An application gets the new image via saveDockerProvider, keeping its registry login, then deploys."""
    new = NEW_PINS["client-portal"]
    (result,) = await app_world.deploy({"client-portal": new})
    assert (result.status, result.previous) == ("done", {"client-portal": f"{IMAGE_PREFIX}client-portal:{OLD_TAG}"})
    app = app_world.double.applications["portalApp0staging01"]
    assert (app.docker_image, app.username, app.password, app.registry_url) == (
        new,
        "deploy-bot",
        "ghcr-read-token-1",
        "ghcr.io",
    )
    assert app_world.double.live["portalApp0staging01"] == {"image": new}
    assert "ghcr-read-token-1" not in " ".join(app_world.events) + repr(result)


async def test_application_rollback_restores_the_previous_image(app_world):
    """A new application image failing health is rolled back to the previous image and re-verified."""
    new = NEW_PINS["client-portal"]
    app_world.vps.vps.mark_bad(new)
    (result,) = await app_world.deploy({"client-portal": new})
    assert (result.status, result.rolled_back) == ("error", "yes, healthy")
    previous = f"{IMAGE_PREFIX}client-portal:{OLD_TAG}"
    assert app_world.double.applications["portalApp0staging01"].docker_image == previous
    assert app_world.double.live["portalApp0staging01"] == {"image": previous}


async def test_application_built_from_git_is_not_switched_silently(app_world):
    """Pinning an image onto a git-built application would change its provider: refused before any write."""
    app_world.double.applications["portalApp0staging01"].source_type = "github"
    with pytest.raises(ConfigError, match="built from source"):
        await app_world.deploy({"client-portal": NEW_PINS["client-portal"]})
    assert app_world.writes() == []


async def test_a_cancelled_run_puts_the_previous_images_back(world):
    """Cancelled mid-deployment (a cancelled job, Ctrl-C): the env is restored and a rollback queued."""
    world.double.script(BACKEND_ID, "stuck")
    with anyio.move_on_after(0.3) as scope:
        await world.deploy(deploy_timeout_s=30.0)
    assert scope.cancelled_caught
    assert world.double.env(BACKEND_ID) == BACKEND_ENV
    assert [job.title.split(" #")[0] for job in world.double.queue] == ["pipeline rollback staging/backend"]
    assert any("cancelled: the previous images are back" in event for event in world.events)
    assert world.double.env(FRONTEND_ID) == FRONTEND_ENV  # the next group never started
    world.double.restart()


async def test_a_cancelled_run_without_rollback_leaves_the_new_pins(world):
    """--no-rollback means hands off, on cancellation too."""
    world.double.script(BACKEND_ID, "stuck")
    with anyio.move_on_after(0.3):
        await world.deploy(deploy_timeout_s=30.0, rollback=False)
    assert NEW_PINS["brain-gateway"] in (world.double.env(BACKEND_ID) or "")
    world.double.restart()
