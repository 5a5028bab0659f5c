"""Tests for pipeline.dokploy against the Dokploy double (real HTTP on loopback).

The first part pins the double to the reference, byte for byte where a client can
tell; the rest checks the client: dataclasses, error mapping, retries, secrecy.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest

from pipeline.config import DokployTarget
from pipeline.dokploy import DokployClient, default_timeout
from pipeline.errors import (
    DokployAuthError,
    DokployError,
    DokployNotFoundError,
    DokployPermissionError,
    DokployUnavailableError,
    DokployValidationError,
    UsageError,
)
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from tests.support.dokploy_double import ADMIN_KEY, ERROR_TAIL, RunningDokploy, http_client

UNAUTHORIZED = b'{"message":"Unauthorized"}'
NOT_FOUND = b'{"message":"Not found","code":"NOT_FOUND","data":{"code":"NOT_FOUND","httpStatus":404,"zodError":null}}'


def compose_target(compose_id: str) -> DokployTarget:
    return DokployTarget(kind="compose", id=compose_id)


def app_target(application_id: str) -> DokployTarget:
    return DokployTarget(kind="application", id=application_id)


@pytest.fixture
async def raw(dokploy: RunningDokploy) -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client on the double, authenticated unless a test overrides the header."""
    async with httpx.AsyncClient(base_url=dokploy.url, timeout=default_timeout()) as http:
        http.headers["x-api-key"] = dokploy.api_key
        yield http


@pytest.fixture
async def http():
    async with http_client() as client:
        yield client


async def settle(dokploy: RunningDokploy, compose_id: str) -> None:
    """Wait (bounded) until the double's queue is empty and the service's last row finished."""
    with anyio.fail_after(5):
        while dokploy.double.active is not None or dokploy.double.queue:
            await anyio.sleep(0.005)
            dokploy.double.advance()


# -- the double is Dokploy ---------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
async def test_double_refuses_missing_or_bad_keys_with_the_26_byte_body(dokploy, key):
    """Every route, known or not, answers 401 {"message":"Unauthorized"} with charset when the key is bad."""
    headers = {} if key is None else {"x-api-key": key}
    async with httpx.AsyncClient(base_url=dokploy.url, timeout=default_timeout()) as client:
        for method, path in [
            ("GET", "/api/compose.one?composeId=x"),
            ("POST", "/api/compose.deploy"),
            ("GET", "/api/nope"),
        ]:
            response = await client.request(method, path, headers=headers, json={} if method == "POST" else None)
            assert response.status_code == 401
            assert response.content == UNAUTHORIZED
            assert len(response.content) == 26
            assert response.headers["content-type"] == "application/json; charset=utf-8"


async def test_double_bearer_header_is_not_a_key(dokploy):
    """Authorization: Bearer is refused like no key at all."""
    async with httpx.AsyncClient(base_url=dokploy.url, timeout=default_timeout()) as client:
        response = await client.get("/api/deployment.queueList", headers={"Authorization": f"Bearer {dokploy.api_key}"})
    assert response.status_code == 401
    assert response.content == UNAUTHORIZED


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/compose.deploy"),
        ("POST", "/api/compose.one"),
        ("PUT", "/api/compose.deploy"),
        ("DELETE", "/api/compose.one"),
        ("OPTIONS", "/api/compose.deploy"),
        ("POST", "/api/compose/deploy"),
        ("GET", "/api/no.such"),
    ],
)
async def test_double_wrong_method_or_path_is_404_without_path(raw, method, path):
    """A wrong method, the slash form or an unknown procedure answers trpc-openapi's NOT_FOUND body."""
    response = await raw.request(method, path, json={"composeId": "x"} if method != "GET" else None)
    assert response.status_code == 404
    assert response.content == NOT_FOUND
    assert response.headers["content-type"] == "application/json"


async def test_double_paths_are_case_insensitive_and_head_is_204(dokploy, raw):
    """/api/Compose.Deploy works, and HEAD with a valid key answers 204."""
    compose = dokploy.double.add_compose(compose_id="caseTest")
    response = await raw.post("/api/Compose.Deploy", json={"composeId": compose.id})
    assert response.status_code == 200
    assert (await raw.head("/api/anything")).status_code == 204


async def test_double_415_messages(raw):
    """POST without JSON gets 415, with trpc-openapi's messages (the unbalanced quote included)."""
    form = await raw.post(
        "/api/compose.deploy", content=b"composeId=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415
    assert form.json()["message"] == 'Unsupported content-type "application/x-www-form-urlencoded'
    assert form.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert form.json()["data"]["httpStatus"] == 415
    bare = await raw.post("/api/compose.deploy", content=b"{}")
    assert bare.status_code == 415
    assert bare.json()["message"] == "Missing content-type header"
    charset = await raw.post(
        "/api/compose.deploy",
        content=b'{"composeId":"nope"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 404  # accepted, then the id is unknown


async def test_double_validation_and_not_found_bodies_are_byte_exact(raw):
    """Missing, empty and unknown composeId answer the exact tRPC bodies of the reference."""
    missing = await raw.post("/api/compose.deploy", json={})
    assert missing.status_code == 400
    assert missing.content == (
        b'{"message":"Input validation failed","code":"BAD_REQUEST","data":{"code":"BAD_REQUEST","httpStatus":400,'
        b'"path":"compose.deploy","zodError":{"formErrors":[],"fieldErrors":{"composeId":["Invalid input: expected '
        b'string, received undefined"]}}},"issues":[{"expected":"string","code":"invalid_type","path":["composeId"],'
        b'"message":"Invalid input: expected string, received undefined"}]}'
    )
    empty = await raw.post("/api/compose.deploy", json={"composeId": ""})
    assert empty.json()["issues"] == [
        {
            "origin": "string",
            "code": "too_small",
            "minimum": 1,
            "inclusive": True,
            "path": ["composeId"],
            "message": "Too small: expected string to have >=1 characters",
        }
    ]
    unknown = await raw.post("/api/compose.deploy", json={"composeId": "nope", "extra": "stripped"})
    assert unknown.status_code == 404
    assert unknown.content == (
        b'{"message":"Compose not found","code":"NOT_FOUND","data":{"code":"NOT_FOUND","httpStatus":404,'
        b'"path":"compose.deploy","zodError":null}}'
    )
    assert (await raw.get("/api/compose.one", params={"input": json.dumps({"composeId": "x"})})).status_code == 400


async def test_double_deploy_bodies_and_empty_200s(dokploy, raw):
    """compose.deploy/redeploy answer the queued objects; application.deploy and update-of-unknown answer empty 200s."""
    compose = dokploy.double.add_compose(compose_id="c1")
    app = dokploy.double.add_application(application_id="a1", docker_image="nginx:1.27")
    deploy = await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    assert deploy.content == b'{"success":true,"message":"Deployment queued","composeId":"c1"}'
    assert deploy.headers["content-type"] == "application/json"
    redeploy = await raw.post("/api/compose.redeploy", json={"composeId": compose.id})
    assert redeploy.json() == {"success": True, "message": "Redeployment queued", "composeId": "c1"}
    app_deploy = await raw.post("/api/application.deploy", json={"applicationId": app.id})
    assert (app_deploy.status_code, app_deploy.content, app_deploy.headers["content-length"]) == (200, b"", "0")
    update = await raw.post("/api/compose.update", json={"composeId": "unknown", "env": "A=1"})
    assert (update.status_code, update.content) == (200, b"")
    save = await raw.post("/api/compose.saveEnvironment", json={"composeId": "unknown", "env": "A=1"})
    assert (save.status_code, save.json()["message"]) == (400, "Error adding environment variables")


async def test_double_update_replaces_the_whole_env_and_returns_the_row(dokploy, raw):
    """compose.update replaces the whole env and answers the row without relations; saveEnvironment: true."""
    compose = dokploy.double.add_compose(compose_id="c2", env="A=1\nB=2")
    row = (await raw.post("/api/compose.update", json={"composeId": compose.id, "env": "C=3"})).json()
    assert row["env"] == "C=3"
    assert "deployments" not in row
    assert (await raw.post("/api/compose.saveEnvironment", json={"composeId": compose.id, "env": "D=4"})).json() is True
    assert dokploy.double.env(compose.id) == "D=4"


async def test_double_queued_job_keeps_the_stale_status_then_runs_then_finishes(dokploy, raw):
    """Queued: composeStatus stays 'done', no row; then running with startedAt; then done with finishedAt."""
    blocker = dokploy.double.add_compose(compose_id="blocker")
    compose = dokploy.double.add_compose(compose_id="c3", status="done")
    dokploy.double.set_duration(blocker.id, 0.2)
    dokploy.double.set_duration(compose.id, 0.05)
    await raw.post("/api/compose.deploy", json={"composeId": blocker.id})
    await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    one = (await raw.get("/api/compose.one", params={"composeId": compose.id})).json()
    assert one["composeStatus"] == "done"  # the stale-done trap
    assert (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json() == []
    queue = (await raw.get("/api/deployment.queueList")).json()
    assert [(j["data"].get("composeId"), j["state"]) for j in queue] == [
        (compose.id, "waiting"),
        (blocker.id, "active"),
    ]
    with anyio.fail_after(5):
        while not (rows := (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json()):
            await anyio.sleep(0.01)
    assert rows[0]["status"] in ("running", "done")
    assert rows[0]["startedAt"] is not None
    await settle(dokploy, compose.id)
    done = (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json()[0]
    assert done["status"] == "done"
    assert done["finishedAt"] >= done["startedAt"]
    assert (await raw.get("/api/compose.one", params={"composeId": compose.id})).json()["composeStatus"] == "done"


async def test_double_error_rows_have_null_message_and_the_reason_in_logs(dokploy, raw):
    """A failed build leaves errorMessage null; readLogs ends with Dokploy's error line; unknown ids 404."""
    compose = dokploy.double.add_compose(compose_id="c4")
    dokploy.double.script(compose.id, "error", error_log="pull access denied for ghcr.io/x/y")
    await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    await settle(dokploy, compose.id)
    row = (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json()[0]
    assert (row["status"], row["errorMessage"]) == ("error", None)
    logs = (await raw.get("/api/deployment.readLogs", params={"deploymentId": row["deploymentId"], "tail": "2"})).json()
    assert logs == f"pull access denied for ghcr.io/x/y\n{ERROR_TAIL}"
    assert (await raw.get("/api/deployment.readLogs", params={"deploymentId": "nope"})).json()["message"] == (
        "Deployment not found"
    )
    assert (await raw.get("/api/deployment.readLogs", params={"deploymentId": "x", "tail": "0"})).status_code == 400


async def test_double_restart_cancels_running_rows_and_loses_the_queue(dokploy, raw):
    """A stuck deployment stays running; a restart cancels it (finishedAt null), sets idle and drops queued jobs."""
    compose = dokploy.double.add_compose(compose_id="c5", status="done")
    dokploy.double.script(compose.id, "stuck")
    await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    rows = dokploy.double.history(compose.id)
    assert [r.status for r in rows] == ["running"]
    dokploy.double.restart()
    row = (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json()
    assert [(r["status"], r["finishedAt"]) for r in row] == [("cancelled", None)]
    assert (await raw.get("/api/deployment.queueList")).json() == []
    assert (await raw.get("/api/compose.one", params={"composeId": compose.id})).json()["composeStatus"] == "idle"


async def test_double_unknown_compose_lists_no_deployments_and_keeps_ten_rows(dokploy, raw):
    """allByCompose of an unknown id is [] for an admin key; only the 10 newest rows of a service are kept."""
    assert (await raw.get("/api/deployment.allByCompose", params={"composeId": "nope"})).json() == []
    compose = dokploy.double.add_compose(compose_id="c6")
    dokploy.double.set_duration(compose.id, 0.001)
    for _ in range(12):
        await raw.post("/api/compose.deploy", json={"composeId": compose.id})
    await settle(dokploy, compose.id)
    rows = (await raw.get("/api/deployment.allByCompose", params={"composeId": compose.id})).json()
    assert len(rows) == 10
    assert [r["createdAt"] for r in rows] == sorted((r["createdAt"] for r in rows), reverse=True)


async def test_double_git_source_renames_the_row_after_the_build(dokploy, raw):
    """For git sources the row's title becomes the commit message once built."""
    compose = dokploy.double.add_compose(compose_id="c7", source_type="github", git_commit=("fix: cache", "abc123"))
    await raw.post("/api/compose.deploy", json={"composeId": compose.id, "title": "pipeline run 7"})
    assert dokploy.double.history(compose.id)[0].title == "pipeline run 7"
    await settle(dokploy, compose.id)
    row = dokploy.double.history(compose.id)[0]
    assert (row.title, row.description) == ("fix: cache", "Commit: abc123")


async def test_double_permission_refusals_are_401_in_trpc_shape(dokploy):
    """A member key without access to a service, or without a permission, gets 401 in the tRPC shape."""
    compose = dokploy.double.add_compose(compose_id="c8")
    dokploy.double.add_key("member-key", services=["other"])
    dokploy.double.add_key("reader-key", services=[compose.id], permissions=["service:read"])
    async with httpx.AsyncClient(base_url=dokploy.url, timeout=default_timeout()) as client:
        denied = await client.post(
            "/api/compose.deploy", json={"composeId": compose.id}, headers={"x-api-key": "member-key"}
        )
        assert denied.status_code == 401
        assert denied.json()["message"] == "You don't have access to this service"
        assert denied.json()["data"]["path"] == "compose.deploy"
        reader = await client.post(
            "/api/compose.deploy", json={"composeId": compose.id}, headers={"x-api-key": "reader-key"}
        )
        assert (reader.status_code, reader.json()["message"]) == (401, "Permission denied")


# -- the client ------------------------------------------------------------


async def test_compose_and_application_are_small_dataclasses(dokploy, http):
    """compose() and application() map Dokploy's rows, with null env as "" and the password kept secret."""
    double = dokploy.double
    double.add_compose(compose_id="c10", name="backend", env=None, compose_file="services: {}", status="done")
    double.add_application(
        application_id="a10",
        name="portal",
        docker_image="ghcr.io/acme/portal:1",
        registry_url="ghcr.io",
        username="bot",
        password="registry-pass-123",
    )
    client = dokploy.client(http)
    compose = await client.compose("c10")
    assert (compose.id, compose.name, compose.env, compose.status, compose.source_type) == (
        "c10",
        "backend",
        "",
        "done",
        "raw",
    )
    app = await client.application("a10")
    assert (app.docker_image, app.registry_url, app.username, app.source_type) == (
        "ghcr.io/acme/portal:1",
        "ghcr.io",
        "bot",
        "docker",
    )
    assert app.password is not None
    assert app.password.reveal() == "registry-pass-123"
    assert "registry-pass-123" not in repr(app)


async def test_the_services_env_never_shows_in_a_repr(dokploy, http):
    """A target's env holds the services' own secrets; a repr (an assertion, a traceback) must not show it."""
    double = dokploy.double
    double.add_compose(compose_id="c12", env="DB_PASSWORD=env-pass-456", compose_file="x: ${DB_PASSWORD}")
    double.add_application(application_id="a12", env="DB_PASSWORD=env-pass-456")
    client = dokploy.client(http)
    compose, app = await client.compose("c12"), await client.application("a12")
    assert compose.env == app.env == "DB_PASSWORD=env-pass-456"
    assert "env-pass-456" not in repr(compose) + repr(app)


async def test_an_env_write_answered_in_its_stored_form_is_checked_by_reading_it(dokploy, http):
    """compose.update may answer the env as stored (encrypted); compose.one, decrypted, settles it."""
    double = dokploy.double
    double.add_compose(compose_id="c13", env="A=1")
    double.update_answers_stored_env = True
    await dokploy.client(http).save_compose_env("c13", "A=2\nB=3")
    assert double.env("c13") == "A=2\nB=3"
    assert [r.procedure for r in double.requests][-2:] == ["compose.update", "compose.one"]


async def test_an_env_write_that_did_not_land_is_an_error(dokploy, http):
    """A 200 that did not store the env must not pass for a pin: the deploy would run the old images."""
    double = dokploy.double
    double.add_compose(compose_id="c14", env="A=1")
    double.update_loses_env = True
    with pytest.raises(DokployError, match="did not store the new env of compose 'c14'"):
        await dokploy.client(http).save_compose_env("c14", "A=2")


async def test_deployments_trigger_logs_and_queue(dokploy, http):
    """trigger queues a job visible in queue(); deployments() lists rows newest first; read_logs returns the tail."""
    double = dokploy.double
    compose = double.add_compose(compose_id="c11")
    double.set_duration(compose.id, 0.3)
    client = dokploy.client(http)
    target = compose_target(compose.id)
    await client.trigger(target, title="first", description="one")
    await client.trigger(target, title="second")
    jobs = await client.queue(target)
    assert [(j.state, j.title) for j in jobs] == [("waiting", "second"), ("active", "first")]
    double.set_duration(compose.id, 0.001)
    assert double.active is not None
    double.active.ends_at = double.clock()  # end the long first job now
    await settle(dokploy, compose.id)
    rows = await client.deployments(target)
    assert [r.title for r in rows] == ["second", "first"]
    assert all(r.status == "done" and r.finished for r in rows)
    assert "Deployed" in await client.read_logs(rows[0].id, tail=1)
    assert await client.deployments(compose_target("unknown")) == []


async def test_application_deploy_accepts_the_empty_body(dokploy, http):
    """application.deploy's empty 200 is a success, and deployment.all lists its rows."""
    app = dokploy.double.add_application(application_id="a12", docker_image="nginx:1")
    client = dokploy.client(http)
    await client.trigger(app_target(app.id), title="go")
    await settle(dokploy, app.id)
    assert [r.status for r in await client.deployments(app_target(app.id))] == ["done"]


async def test_save_compose_env_replaces_and_checks(dokploy, http):
    """save_compose_env replaces the whole env through compose.update; an unknown id is not found."""
    dokploy.double.add_compose(compose_id="c13", env="A=1\nB=2")
    client = dokploy.client(http)
    await client.save_compose_env("c13", "# pinned\nA=9\n")
    assert dokploy.double.env("c13") == "# pinned\nA=9\n"
    with pytest.raises(DokployNotFoundError, match=r"compose 'nope'.*services/compose/<id>"):
        await client.save_compose_env("nope", "A=1")


async def test_save_docker_provider_sends_all_five_keys(dokploy, http):
    """save_docker_provider sets the image and re-sends the registry settings it was given."""
    dokploy.double.add_application(application_id="a14", docker_image="old:1", username="bot", password="pw-1")
    client = dokploy.client(http)
    await client.save_docker_provider(
        "a14", image="new@sha256:" + "a" * 64, registry_url="", username="bot", password=SecretValue("p", "pw-1")
    )
    record = dokploy.double.applications["a14"]
    assert (record.docker_image, record.username, record.password, record.registry_url) == (
        "new@sha256:" + "a" * 64,
        "bot",
        "pw-1",
        None,
    )
    body = dokploy.double.calls("application.saveDockerProvider")[-1].body
    assert set(body) == {"applicationId", "dockerImage", "username", "password", "registryUrl"}


async def test_bad_key_is_an_auth_error(dokploy, http):
    """A wrong or empty key maps to DokployAuthError with the fix."""
    for key in ("not-a-valid-key-0001", ""):
        with pytest.raises(DokployAuthError) as caught:
            await dokploy.client(http, key=key).compose("x")
        assert str(caught.value) == (
            f"Dokploy at {dokploy.url} rejected the API key (missing, wrong, expired or rate-limited): "
            "check the key in DOKPLOY_API_KEY (--dokploy-key)"
        )
        assert caught.value.status == 401


async def test_permission_refusal_names_procedure_and_id(dokploy, http):
    """A tRPC-shaped 401 maps to DokployPermissionError naming the procedure, the id and the fix."""
    compose = dokploy.double.add_compose(compose_id="c15")
    dokploy.double.add_key("member-key", services=["other"])
    with pytest.raises(DokployPermissionError, match=r"compose\.deploy on compose 'c15'.*owner/admin"):
        await dokploy.client(http, key="member-key").trigger(compose_target(compose.id), title="t")


async def test_not_found_names_the_id_and_where_to_find_it(dokploy, http):
    """404 'Compose not found' / 'Application not found' / 'Deployment not found' name the id and the UI."""
    client = dokploy.client(http)
    with pytest.raises(DokployNotFoundError) as caught:
        await client.compose("missingId")
    assert "compose 'missingId'" in str(caught.value)
    assert f"{dokploy.url}/dashboard/projects" in str(caught.value)
    assert "compose_id in services.toml" in str(caught.value)
    with pytest.raises(DokployNotFoundError, match="application 'gone'"):
        await client.trigger(app_target("gone"), title="t")
    with pytest.raises(DokployNotFoundError, match=r"deployment 'old'.*10 newest"):
        await client.read_logs("old")


async def test_validation_error_lists_the_issues(dokploy, http):
    """A 400 maps to DokployValidationError listing each zod issue."""
    with pytest.raises(DokployValidationError, match="composeId: Too small: expected string to have >=1 characters"):
        await dokploy.client(http).compose("")


async def test_other_4xx_and_wrong_base_url(dokploy, http):
    """415 maps to a plain DokployError; a base URL that is not Dokploy's says so."""
    dokploy.double.add_compose(compose_id="c16")
    dokploy.double.fail_next(status=415)
    with pytest.raises(DokployError) as caught:
        await dokploy.client(http).compose("c16")
    assert type(caught.value) is DokployError
    assert "415" in str(caught.value)
    wrong = DokployClient(http, base_url=dokploy.url + "/nested", api_key=dokploy.secret)
    with pytest.raises(DokployError, match=r"no endpoint GET /api/compose\.one.*dokploy\.url") as caught:
        await wrong.compose("c16")
    assert type(caught.value) is DokployError


async def test_reads_are_retried_on_5xx_and_dropped_connections(dokploy, http):
    """A read survives a 502 from the proxy and a dropped connection: three requests, one result."""
    dokploy.double.add_compose(compose_id="c17")
    dokploy.double.fail_next(status=502)
    dokploy.double.fail_next(drop=True)
    assert (await dokploy.client(http).compose("c17")).id == "c17"
    assert [r.status for r in dokploy.double.calls("compose.one")] == [502, "drop", 200]


async def test_reads_give_up_after_the_policy(dokploy, http):
    """Persistent 500s end in DokployUnavailableError after the policy's attempts, naming the count."""
    dokploy.double.add_compose(compose_id="c18")
    dokploy.double.fail_next(5, status=500)
    with pytest.raises(DokployUnavailableError, match="after 3 attempts") as caught:
        await dokploy.client(http).compose("c18")
    assert caught.value.status == 500
    assert len(dokploy.double.calls("compose.one")) == 3


async def test_deploy_is_not_retried_on_5xx_or_drop(dokploy, http):
    """A deploy answered by a 500, or dropped after Dokploy queued it, is not re-sent: one job only."""
    compose = dokploy.double.add_compose(compose_id="c19")
    dokploy.double.set_duration(compose.id, 5)
    client = dokploy.client(http)
    dokploy.double.fail_next(status=500, procedure="compose.deploy")
    with pytest.raises(DokployUnavailableError, match="not repeated"):
        await client.trigger(compose_target(compose.id), title="t")
    dokploy.double.fail_next(drop=True, after_handling=True, procedure="compose.deploy")
    with pytest.raises(DokployUnavailableError, match="was sent, so it was not repeated"):
        await client.trigger(compose_target(compose.id), title="t")
    assert len(dokploy.double.calls("compose.deploy")) == 2
    assert len(dokploy.double.history(compose.id)) + len(dokploy.double.queue) == 1  # only the dropped one ran


async def test_deploy_is_not_retried_after_a_read_timeout(dokploy):
    """When Dokploy got the deploy but answered too late, the client does not send it again."""
    compose = dokploy.double.add_compose(compose_id="c20")
    dokploy.double.fail_next(hang_s=10, after_handling=True, procedure="compose.deploy")
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.1, connect=2)) as slow:
        with pytest.raises(DokployUnavailableError, match=r"ReadTimeout.*not repeated"):
            await dokploy.client(slow).trigger(compose_target(compose.id), title="t")
    dokploy.double.close()
    assert len(dokploy.double.calls("compose.deploy")) == 1
    assert len(dokploy.double.history(compose.id)) + len(dokploy.double.queue) == 1


class RefuseFirst(httpx.AsyncBaseTransport):
    """Refuse the first N connections, as a host with nothing listening yet would."""

    def __init__(self, refusals: int) -> None:
        self.left = refusals
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.left:
            self.left -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_deploy_is_retried_when_the_connection_was_refused(dokploy):
    """A refused connection proves the deploy never left, so it is retried and queued once."""
    compose = dokploy.double.add_compose(compose_id="c21")
    async with httpx.AsyncClient(transport=RefuseFirst(2), timeout=default_timeout()) as flaky:
        await dokploy.client(flaky).trigger(compose_target(compose.id), title="t")
    assert len(dokploy.double.calls("compose.deploy")) == 1
    assert len(dokploy.double.history(compose.id)) + len(dokploy.double.queue) == 1


async def test_unreachable_dokploy_is_unavailable(http):
    """Nothing listening: DokployUnavailableError naming the URL and what to check."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = DokployClient(
        http,
        base_url=f"http://127.0.0.1:{port}",
        api_key=SecretValue("DOKPLOY_API_KEY", ADMIN_KEY),
        retry=RetryPolicy(attempts=2, timeout_s=1, wait_initial_s=0.001, wait_max_s=0.001),
    )
    with pytest.raises(DokployUnavailableError, match=rf"127.0.0.1:{port}.*after 2 attempts.*check dokploy.url"):
        await client.trigger(compose_target("x"), title="t")


async def test_client_refuses_missing_timeouts_and_bad_urls():
    """A client without timeouts, or a URL that is not http(s), is a usage error; a trailing /api is dropped."""
    key = SecretValue("DOKPLOY_API_KEY", ADMIN_KEY)
    async with httpx.AsyncClient(timeout=None) as untimed:
        with pytest.raises(UsageError, match="default_timeout"):
            DokployClient(untimed, base_url="http://127.0.0.1:1", api_key=key)
    async with http_client() as timed:
        with pytest.raises(UsageError, match="not an http"):
            DokployClient(timed, base_url="dokploy.example.com", api_key=key)
        assert DokployClient(timed, base_url="http://127.0.0.1:1/api/", api_key=key).base_url == "http://127.0.0.1:1"


async def test_the_key_never_appears_in_errors_reprs_or_logs(dokploy, http, caplog):
    """Across every failure path, the API key is in no message, repr, cause or log record."""
    caplog.set_level(logging.DEBUG)
    double = dokploy.double
    key = "dk_SECRET_" + "z" * 40
    double.keys[key] = double.keys[dokploy.api_key]
    double.add_compose(compose_id="k1")
    double.add_key("member-" + key, services=["other"])
    client = dokploy.client(http, key=key)
    errors: list[BaseException] = []

    async def expect_failure(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except DokployError as e:
            errors.append(e)
        else:
            raise AssertionError("expected a DokployError")

    await expect_failure(lambda: dokploy.client(http, key=key + "x").compose("k1"))
    await expect_failure(lambda: dokploy.client(http, key="member-" + key).trigger(compose_target("k1"), title="t"))
    await expect_failure(lambda: client.compose("unknown"))
    await expect_failure(lambda: client.compose(""))
    double.fail_next(5, status=500)
    await expect_failure(lambda: client.compose("k1"))
    double.fail_next(drop=True, procedure="compose.deploy")
    await expect_failure(lambda: client.trigger(compose_target("k1"), title="t"))
    double.fail_next(status=415)
    await expect_failure(lambda: client.compose("k1"))
    await expect_failure(
        lambda: DokployClient(http, base_url=dokploy.url + "/x", api_key=SecretValue("K", key)).compose("k1")
    )
    assert len(errors) == 8
    texts = [repr(client), str(client), caplog.text]
    for error in errors:
        texts += [str(error), repr(error), repr(error.args)]
        cause = error.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
    for text in texts:
        assert key not in text
