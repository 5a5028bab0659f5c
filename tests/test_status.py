"""status against the Dokploy double and its VPS: real HTTP, real state, real health answers."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from pipeline import config as config_module
from pipeline.config import Config, DokployTarget
from pipeline.dokploy import DokployClient, default_timeout
from pipeline.errors import DokployAuthError, UsageError
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from pipeline.status import PinnedImage, StatusReport, collect_status, render_json, render_table

if TYPE_CHECKING:
    from tests.support.dokploy_double import RunningDokploy, RunningVps


FAST = RetryPolicy(attempts=2, timeout_s=2.0, wait_initial_s=0.005, wait_max_s=0.01)
DB_PASSWORD = "db-password-never-printed-7Qx"
BRAIN = "127.0.0.1:5000/acme/shop-brain-gateway@sha256:" + "b" * 64
PORTAL = "127.0.0.1:5000/acme/shop-client-portal@sha256:" + "c" * 64
DEPLOY_S = 42.0


@dataclass
class Scene:
    """The double after three backend deployments (done, error, still running), an app, and a bad id."""

    dokploy: RunningDokploy
    config: Config
    http: httpx.AsyncClient
    backend_id: str

    def client(self, key: str | None = None, url: str = "") -> DokployClient:
        secret = SecretValue("DOKPLOY_API_KEY", key if key is not None else self.dokploy.api_key)
        return DokployClient(self.http, base_url=url or self.dokploy.url, api_key=secret, retry=FAST)

    async def status(
        self, *, environment: str = "", deployments: int = 3, client: DokployClient | None = None
    ) -> StatusReport:
        return await collect_status(
            self.config,
            environment=environment,
            client=client or self.client(),
            http=self.http,
            deployments=deployments,
        )


def write_config(dokploy_url: str, vps_url: str, backend_id: str, frontend_id: str) -> Config:
    text = f"""
[registry]
host = "127.0.0.1:5000"
namespace = "acme"
image_prefix = "shop-"

[dokploy]
url = "{dokploy_url}"

[environments.staging]
branch = "staging"
tags = ["staging-{{sha}}"]

[environments.production]
branch = "main"
tags = ["main-{{sha}}"]

[services.brain-gateway]
context = "brain"

[services.client-portal]
context = "portal"

[[groups]]
name = "backend"
services = ["brain-gateway"]

[groups.targets.staging]
compose_id = "{backend_id}"

[[groups.targets.staging.health]]
name = "brain"
url = "{vps_url}/health"

[groups.targets.production]
compose_id = "noSuchCompose0000001"

[[groups]]
name = "frontend"
services = ["client-portal"]

[groups.targets.staging]
application_id = "{frontend_id}"

[[groups.targets.staging.health]]
url = "{vps_url}/portal"
"""
    return config_module.parse(text, file="services.toml")


@pytest.fixture
async def scene(dokploy: RunningDokploy, vps: RunningVps) -> AsyncIterator[Scene]:
    double = dokploy.double
    backend = double.add_compose(
        name="shop-backend", env=f"BRAIN_GATEWAY_IMAGE={BRAIN}\nDB_PASSWORD={DB_PASSWORD}\n", status="idle"
    )
    frontend = double.add_application(name="shop-portal", docker_image=PORTAL, status="done")
    vps.vps.serve("/health", service_id=backend.id, variable="BRAIN_GATEWAY_IMAGE")
    # /portal is not served: the VPS answers 404, so that check is down.
    config = write_config(dokploy.url, vps.url, backend.id, frontend.id)
    async with httpx.AsyncClient(timeout=default_timeout()) as http:
        scene = Scene(dokploy=dokploy, config=config, http=http, backend_id=backend.id)
        double.set_duration(backend.id, DEPLOY_S)
        double.script(backend.id, "done", "error", "stuck")
        target = DokployTarget(kind="compose", id=backend.id)
        for n in range(3):
            await scene.client().trigger(target, title=f"deploy {n + 1}")
        # Run the double's worker past both finished jobs; the third stays running.
        double.advance(double.clock() + 10 * DEPLOY_S)
        yield scene


async def test_shows_each_targets_real_state_history_images_and_health(scene):
    """Every target shows Dokploy's state, newest deployments first, pinned images and live health."""
    report = await scene.status()
    assert [(t.environment, t.group, t.kind) for t in report.targets] == [
        ("staging", "backend", "compose"),
        ("staging", "frontend", "application"),
        ("production", "backend", "compose"),
    ]
    backend, frontend, production = report.targets

    assert (backend.name, backend.state, backend.error) == ("shop-backend", "running", "")
    assert [d.status for d in backend.deployments] == ["running", "error", "done"]
    assert [d.title for d in backend.deployments] == ["deploy 3", "deploy 2", "deploy 1"]
    running, failed, done = backend.deployments
    assert running.duration_s is None
    assert failed.duration_s == pytest.approx(DEPLOY_S, abs=0.002)
    assert done.duration_s == pytest.approx(DEPLOY_S, abs=0.002)
    assert [r.id for r in scene.dokploy.double.history(scene.backend_id)] == [d.id for d in backend.deployments]
    assert backend.images == (PinnedImage(service="brain-gateway", variable="BRAIN_GATEWAY_IMAGE", image=BRAIN),)
    (brain,) = backend.health
    assert (brain.name, brain.ok, brain.status) == ("brain", True, 200)
    assert brain.latency_s > 0

    assert (frontend.state, frontend.deployments) == ("done", ())
    assert frontend.images == (PinnedImage(service="client-portal", variable="", image=PORTAL),)
    (portal,) = frontend.health
    assert (portal.ok, portal.status, portal.detail) == (False, 404, "HTTP 404 (expected 200)")

    assert "noSuchCompose0000001" in production.error
    assert "compose_id in services.toml" in production.error
    assert (production.deployments, production.images, production.health) == ((), (), ())


async def test_environment_and_deployment_count_narrow_the_report(scene):
    """One environment shows only its targets, and the history is cut to the count asked for."""
    report = await scene.status(environment="staging", deployments=1)
    assert [t.environment for t in report.targets] == ["staging", "staging"]
    assert [d.status for d in report.targets[0].deployments] == ["running"]
    with pytest.raises(UsageError, match=r"unknown environment 'qa'.*staging, production"):
        await scene.status(environment="qa")


async def test_reads_only(scene):
    """Collecting status sends nothing but GETs to Dokploy."""
    before = len(scene.dokploy.double.requests)
    await scene.status()
    assert {r.method for r in scene.dokploy.double.requests[before:]} == {"GET"}


async def test_bad_key_stops_with_the_auth_message(scene):
    """A key Dokploy refuses stops status with DokployAuthError, without the key in the message."""
    with pytest.raises(DokployAuthError) as caught:
        await scene.status(client=scene.client(key="dk_wrong_key_Zq"))
    assert "rejected the API key" in str(caught.value)
    assert "dk_wrong_key_Zq" not in str(caught.value)


async def test_a_target_the_key_may_not_read_is_an_error_row(scene):
    """A key limited to the backend shows the frontend as an error row; the rest is unaffected."""
    scene.dokploy.double.add_key("dk_member_key_Wv", services=[scene.backend_id])
    report = await scene.status(environment="staging", client=scene.client(key="dk_member_key_Wv"))
    backend, frontend = report.targets
    assert backend.error == ""
    assert backend.state == "running"
    assert "lacks permission" in frontend.error
    assert frontend.health[0].status == 404


async def test_unreachable_dokploy_gives_error_rows_and_still_probes_health(scene):
    """With Dokploy down every target is an error row, and health is still probed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    report = await scene.status(environment="staging", client=scene.client(url=url))
    assert all("did not answer" in t.error for t in report.targets)
    assert report.targets[0].health[0].ok is True


async def test_table_shows_everything_but_secrets(scene):
    """The table lists state, images, deployments and health, and never the key or other env values."""
    text = render_table(await scene.status())
    assert "staging/backend  compose " + scene.backend_id + " 'shop-backend'" in text
    assert "state  running" in text
    assert BRAIN in text
    assert "42.0s" in text
    assert "DOWN  HTTP 404 (expected 200)" in text
    assert "ERROR  Dokploy at" in text
    assert DB_PASSWORD not in text
    assert scene.dokploy.api_key not in text


async def test_json_has_a_stable_shape(scene):
    """The JSON carries every field under fixed keys, with nulls for what is unknown."""
    data = json.loads(render_json(await scene.status()))
    assert set(data) == {"schema", "dokploy_url", "environment", "targets"}
    assert (data["schema"], data["environment"]) == (1, None)
    backend = data["targets"][0]
    assert set(backend) == {
        "environment",
        "group",
        "kind",
        "id",
        "name",
        "state",
        "error",
        "images",
        "deployments",
        "health",
    }
    assert backend["images"] == [{"service": "brain-gateway", "variable": "BRAIN_GATEWAY_IMAGE", "image": BRAIN}]
    assert set(backend["deployments"][0]) == {"id", "status", "title", "started", "duration_s"}
    assert backend["deployments"][0]["duration_s"] is None
    assert backend["deployments"][1]["duration_s"] == pytest.approx(DEPLOY_S, abs=0.002)
    assert set(backend["health"][0]) == {"name", "url", "ok", "status", "latency_ms", "detail"}
    assert data["targets"][2]["error"].startswith("Dokploy at")
    assert DB_PASSWORD not in json.dumps(data)


async def test_an_unnamed_health_check_prints_its_url_once(scene):
    """A check without a name is labelled by its URL, which is not repeated in the last column."""
    report = await scene.status()
    unnamed = [h for t in report.targets for h in t.health if h.name == h.url]
    assert unnamed, "the scene has no unnamed health check"
    lines = render_table(report).splitlines()
    for check in unnamed:
        (line,) = [line for line in lines if check.url in line]
        assert line.count(check.url) == 1
