"""Integration tests of pipeline.flows (and pipeline.run): publish, deploy, test reports and notify.

Images go to a real registry (Debian's docker-registry) through a fake engine that
pushes labelled synthetic images; deploys go to the Dokploy double and are gated
on the VPS double's health endpoints.
Waits are scaled down through ``flows.Options`` and services.toml's health timeout.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import replace

import pytest

from pipeline import config as config_module
from pipeline import flows
from pipeline.errors import BuildError, ConfigError, DokployAuthError, MissingSecretError, UsageError
from pipeline.images import TestReport
from pipeline.progress import Progress
from pipeline.secret import SecretValue
from pipeline.summary import render_markdown, render_text
from tests.support.dokploy_double import BACKEND_ID, FRONTEND_ID
from tests.support.webhook import serve_webhook
from tests.support.world import (
    BACKEND_PROD_ID,
    SERVICES,
    SHORT,
    FakeEngine,
    World,
    assert_no_secrets,
    pinned_env,
    rendered,
    rows,
    services_toml,
    tags_of,
)

FRONTEND = ("bizoholic-frontend", "client-portal")


def seqs(world: World, procedure: str, compose_id: str) -> list[int]:
    return [
        r.seq
        for r in world.dokploy.double.requests
        if r.procedure == procedure and isinstance(r.body, dict) and r.body.get("composeId") == compose_id
    ]


# -- deploy ----------------------------------------------------------------------


async def test_deploy_publishes_every_service_pins_its_digest_and_deploys_the_groups_in_order(world, capsys):
    """All tags share one digest, the env pins image@digest, backend is done and healthy before frontend starts."""
    engine = FakeEngine(world.client)
    plan = world.plan()

    summary = await flows.deploy(
        plan, engine=engine, credentials=world.credentials(), options=world.options(), progress=Progress()
    )

    assert summary.ok, render_text(summary)
    by_service = rows(summary)
    assert list(by_service) == list(SERVICES)
    for service in SERVICES:
        row = by_service[service]
        assert row.tags == (plan.service(service).content_tag, "staging", f"staging-{SHORT}")
        digests = {(await world.client.resolve(world.repository(service), tag)).digest for tag in row.tags}
        assert digests == {row.digest}
        assert row.reference == f"{world.image(service)}@{row.digest}"
        assert (row.change, row.deploy_status, row.health, row.rolled_back) == ("built", "done", "passed", "no")
    assert by_service["brain-gateway"].tests == "passed"
    assert sorted(engine.published()) == sorted(f"{world.image(s)}:{plan.service(s).content_tag}" for s in SERVICES), (
        "the engine pushes once per service; the registry copies the other tags"
    )

    pins = {s: by_service[s].reference for s in SERVICES}
    assert world.env(BACKEND_ID) == pinned_env(world.envs[BACKEND_ID], world, {"brain-gateway": pins["brain-gateway"]})
    assert world.env(FRONTEND_ID) == pinned_env(world.envs[FRONTEND_ID], world, {s: pins[s] for s in FRONTEND})
    assert world.env(BACKEND_PROD_ID) == world.envs[BACKEND_PROD_ID]

    double = world.dokploy.double
    backend_row, frontend_row = double.history(BACKEND_ID)[0], double.history(FRONTEND_ID)[0]
    assert (backend_row.status, frontend_row.status) == ("done", "done")
    assert by_service["brain-gateway"].deployment == backend_row.id
    assert {by_service[s].deployment for s in FRONTEND} == {frontend_row.id}
    backend_trigger = seqs(world, "compose.deploy", BACKEND_ID)
    frontend_write = seqs(world, "compose.update", FRONTEND_ID)
    frontend_trigger = seqs(world, "compose.deploy", FRONTEND_ID)
    backend_healthy = [
        seq for seq, path, status in world.vps.vps.requests if path == "/staging/backend/health" and status == 200
    ]
    assert len(backend_trigger) == len(frontend_trigger) == len(frontend_write) == 1
    assert backend_trigger[0] < backend_healthy[0] < frontend_write[0] < frontend_trigger[0]
    assert backend_row.finished_at is not None
    assert backend_row.finished_at <= frontend_row.created_at

    text = render_text(summary)
    for service in SERVICES:
        assert by_service[service].digest[:19] in text
    assert backend_row.id in text
    assert frontend_row.id in text
    assert_no_secrets(rendered(summary), *capsys.readouterr())


async def test_a_failed_frontend_health_gate_rolls_the_frontend_back_and_fails_the_run(world):
    """The VPS rejects the new frontend image: its env is restored and redeployed, and finish raises the table."""

    def break_frontend(plan, reference):
        if plan.name == "bizoholic-frontend":
            world.vps.vps.mark_bad(reference)

    summary = await flows.deploy(
        world.plan(),
        engine=FakeEngine(world.client, on_publish=break_frontend),
        credentials=world.credentials(),
        options=world.options(),
    )

    assert not summary.ok
    by_service = rows(summary)
    backend = by_service["brain-gateway"]
    assert (backend.deploy_status, backend.health, backend.rolled_back) == ("done", "passed", "no")
    for service in FRONTEND:
        row = by_service[service]
        assert (row.deploy_status, row.health, row.rolled_back) == ("error", "failed", "yes, healthy")
    assert world.env(FRONTEND_ID) == world.envs[FRONTEND_ID], "the frontend env is restored byte for byte"
    assert world.env(BACKEND_ID) == pinned_env(world.envs[BACKEND_ID], world, {"brain-gateway": backend.reference}), (
        "the healthy earlier group keeps its new image"
    )
    titles = [row.title for row in world.dokploy.double.history(FRONTEND_ID)]
    assert len(titles) == 2
    assert "rollback" in titles[0]
    assert "deploy" in titles[1]
    assert any("/staging/bizoholic/health" in failure for failure in summary.failures)

    with pytest.raises(flows.RunFailedError) as caught:
        flows.finish(summary, "text")
    message = str(caught.value)
    assert message == render_text(summary)
    assert "rolled back" in message
    assert "yes, healthy" in message
    assert summary.headline.endswith("FAILED")
    assert summary.headline in message
    assert_no_secrets(message)


async def test_progress_lines_show_each_phase_and_group_ending_as_it_really_did(world):
    """The build phase ends ok; the deploy phase and the failing group say FAILED, each with a duration."""

    def break_frontend(plan, reference):
        if plan.name == "bizoholic-frontend":
            world.vps.vps.mark_bad(reference)

    out = io.StringIO()
    await flows.deploy(
        world.plan(),
        engine=FakeEngine(world.client, on_publish=break_frontend),
        credentials=world.credentials(),
        options=world.options(),
        progress=Progress(stream=out),
    )

    lines = out.getvalue().splitlines()
    phases = [line for line in lines if line.startswith("== ")]
    assert phases[0] == "== build, test and publish"
    assert re.fullmatch(r"== build, test and publish: ok \(\d+\.\ds\)", phases[1])
    assert phases[2] == "== deploy staging: backend, frontend"
    assert re.fullmatch(r"== deploy staging: backend, frontend: FAILED \(\d+\.\ds\): frontend: error", phases[3])
    assert any(re.fullmatch(r"note: backend: deployed and healthy \(1 check\) in \d+\.\ds", line) for line in lines)
    assert any(re.match(r"note: frontend: failed after \d+\.\ds: ", line) for line in lines)


async def test_a_failed_backend_build_deploys_no_group(world):
    """The first group has no image: it is not deployed, and neither is any group after it."""
    error = BuildError(
        "brain-gateway", "build", "`pip install -r requirements.txt` exited 1", "ERROR: no fastapi==99.0"
    )
    engine = FakeEngine(world.client, build_errors={"brain-gateway": error})

    summary = await flows.deploy(world.plan(), engine=engine, credentials=world.credentials(), options=world.options())

    assert not summary.ok
    assert world.writes() == []
    by_service = rows(summary)
    assert (by_service["brain-gateway"].change, by_service["brain-gateway"].deploy_status) == ("failed", "skipped")
    for service in FRONTEND:
        assert (by_service[service].change, by_service[service].deploy_status) == ("built", "skipped")
        assert "groups deploy in order" in by_service[service].error
        assert f"staging-{SHORT}" in await tags_of(world.client, world.repository(service))
    text = render_text(summary)
    assert "brain-gateway: build failed: `pip install -r requirements.txt` exited 1" in text
    assert "backend: not deployed: brain-gateway has no image (build failed)" in text
    assert await tags_of(world.client, world.repository("brain-gateway")) == []


async def test_run_tests_builds_everything_publishes_nothing_and_honours_the_options(world):
    """build-all / test: every service built, none published; --skip-tests and --fail-fast reach the builds."""
    engine = FakeEngine(world.client)
    summary = await flows.run_tests(world.plan(), engine=engine, options=flows.Options(skip_tests=True, concurrency=1))

    assert summary.ok
    assert {o.service: (o.change, o.tests) for o in summary.outcomes} == {
        "brain-gateway": ("built", "skipped"),
        "bizoholic-frontend": ("built", "none"),
        "client-portal": ("built", "none"),
    }
    assert "tests skipped by --skip-tests" in summary.notes
    assert engine.published() == []
    assert ("test", "brain-gateway") not in engine.calls

    error = BuildError("brain-gateway", "build", "`pip install` exited 1")
    failing = FakeEngine(world.client, build_errors={"brain-gateway": error})
    summary = await flows.run_tests(world.plan(), engine=failing, options=flows.Options(fail_fast=True, concurrency=1))
    assert not summary.ok
    assert [o.change for o in summary.outcomes] == ["failed", "skipped", "skipped"]


class FailingTestsEngine(FakeEngine):
    """The frontend's tests fail and leave JUnit reports behind (a handle the reader understands)."""

    async def test(self, plan, built):
        if plan.name != "client-portal":
            return await super().test(plan, built)
        error = BuildError(plan.name, "test", "`npm test` exited 1", "2 failing")
        return TestReport(error=error, reports=f"reports of {plan.name}")


def with_portal_tests(world: World) -> config_module.Config:
    """The world's config, with tests (and a reports path) declared for client-portal."""
    config = world.config()
    tests = config_module.TestSpec(command=("npm", "test"), reports="/app/reports")
    services = {**config.services, "client-portal": replace(config.services["client-portal"], test=tests)}
    return replace(config, services=services)


JUNIT = """<testsuite name="jest">
  <testcase classname="login" name="accepts a valid user"/>
  <testcase classname="login" name="rejects a bad password"><failure message="expected 401, got 500"/></testcase>
  <testcase classname="cart" name="adds an item"><error message="TypeError: cart is undefined"/></testcase>
</testsuite>"""


async def test_failed_tests_from_junit_reports_are_listed_in_the_summary(world):
    """A service whose tests fail is not published, and its failing cases appear under its error."""
    read = []

    async def reports(service, handle):
        read.append((service, handle))
        return {"junit.xml": JUNIT}

    summary = await flows.publish(
        world.plan(config=with_portal_tests(world)),
        engine=FailingTestsEngine(world.client),
        credentials=world.credentials(),
        options=world.options(),
        reports=reports,
    )

    assert read == [("client-portal", "reports of client-portal")]  # only failing services are read
    assert list(summary.failures) == [
        "client-portal: test failed: `npm test` exited 1\n2 failing",
        "client-portal: login::rejects a bad password failed: expected 401, got 500",
        "client-portal: cart::adds an item errored: TypeError: cart is undefined",
    ]
    assert "client-portal: login::rejects a bad password failed" in render_markdown(summary)
    assert await tags_of(world.client, world.repository("client-portal")) == []


async def test_unreadable_reports_are_noted_without_hiding_the_test_failure(world):
    """Tests that died before writing reports: the failure stays, with a line saying why no cases are listed."""

    async def reports(service, handle):
        raise FileNotFoundError("no such file or directory: /reports")

    summary = await flows.publish(
        world.plan(config=with_portal_tests(world)),
        engine=FailingTestsEngine(world.client),
        credentials=world.credentials(),
        options=world.options(),
        reports=reports,
    )

    assert summary.failures[0].startswith("client-portal: test failed: `npm test` exited 1")
    assert summary.failures[1] == (
        "client-portal: test reports could not be read (FileNotFoundError: no such file or directory: /reports)"
    )


async def test_a_failed_frontend_build_still_deploys_the_backend_before_it(world):
    """A later group without an image is skipped; the earlier group deploys and is health-checked."""
    error = BuildError("client-portal", "build", "`npm ci` exited 1", "npm ERR! code ERESOLVE")
    engine = FakeEngine(world.client, build_errors={"client-portal": error})

    summary = await flows.deploy(world.plan(), engine=engine, credentials=world.credentials(), options=world.options())

    assert not summary.ok
    by_service = rows(summary)
    backend = by_service["brain-gateway"]
    assert (backend.deploy_status, backend.health) == ("done", "passed")
    assert world.env(BACKEND_ID) == pinned_env(world.envs[BACKEND_ID], world, {"brain-gateway": backend.reference})
    assert world.env(FRONTEND_ID) == world.envs[FRONTEND_ID]
    assert seqs(world, "compose.update", FRONTEND_ID) == seqs(world, "compose.deploy", FRONTEND_ID) == []
    assert by_service["bizoholic-frontend"].change == "built"
    assert by_service["bizoholic-frontend"].deploy_status == "skipped"
    assert by_service["client-portal"].change == "failed"
    assert "frontend: not deployed: client-portal has no image (build failed)" in summary.failures
    assert "client-portal: build failed: `npm ci` exited 1" in render_text(summary)


async def test_skip_build_pins_the_images_this_commit_published(world):
    """--skip-build resolves staging-<sha> (not the moving tag) and pins each service by that digest."""
    published = {}
    for service in SERVICES:
        published[service] = await world.seed(service, [f"staging-{SHORT}"])
        await world.seed(service, ["staging"], revision="fedcba9876543210", payload=f"{service} newer".encode())
    engine = FakeEngine(None)

    summary = await flows.deploy(
        world.plan(),
        engine=engine,
        credentials=world.credentials(registry_token=False),
        options=world.options(skip_build=True),
    )

    assert summary.ok, render_text(summary)
    assert engine.calls == []
    by_service = rows(summary)
    for service in SERVICES:
        row = by_service[service]
        assert (row.change, row.digest, row.tags) == ("reused", published[service], (f"staging-{SHORT}",))
        assert row.reference == f"{world.image(service)}@{published[service]}"
    assert world.env(BACKEND_ID) == pinned_env(
        world.envs[BACKEND_ID], world, {"brain-gateway": by_service["brain-gateway"].reference}
    )
    assert world.env(FRONTEND_ID) == pinned_env(
        world.envs[FRONTEND_ID], world, {s: by_service[s].reference for s in FRONTEND}
    )


async def test_skip_build_with_an_unpublished_image_names_it_before_touching_dokploy(world):
    """One service has no staging-<sha> tag: UsageError naming the service and tag, no Dokploy request."""
    for service in SERVICES[:2]:
        await world.seed(service, [f"staging-{SHORT}"])

    with pytest.raises(UsageError) as caught:
        await flows.deploy(
            world.plan(), engine=None, credentials=world.credentials(), options=world.options(skip_build=True)
        )

    assert f"client-portal: {world.image('client-portal')}:staging-{SHORT} is not in the registry" in str(caught.value)
    assert world.dokploy.double.requests == []


@pytest.mark.parametrize(
    "tags", [("staging", "staging-{sha}"), ("{branch}-{sha}", "latest")], ids=["moving-tag-first", "moving-tag-last"]
)
async def test_a_dry_run_builds_and_checks_but_publishes_and_deploys_nothing(world, tags, capsys):
    """--dry-run: built, tested and smoke-checked; no tag in the registry, no Dokploy POST, envs unchanged."""
    config = world.write_config(staging_tags=tags)
    engine = FakeEngine(world.client)

    summary = await flows.deploy(
        world.plan(config=config),
        engine=engine,
        credentials=world.credentials(),
        options=world.options(dry_run=True),
        progress=Progress(),
    )

    assert summary.ok, render_text(summary)
    assert sorted(engine.calls) == sorted(
        [("build", s) for s in SERVICES] + [("test", "brain-gateway"), ("smoke", "client-portal")]
    )
    for service in SERVICES:
        assert await tags_of(world.client, world.repository(service)) == []
    assert world.dokploy.double.requests, "the dry run reads the targets"
    assert world.writes() == []
    assert world.env(BACKEND_ID) == world.envs[BACKEND_ID]
    assert world.env(FRONTEND_ID) == world.envs[FRONTEND_ID]
    assert {o.deploy_status for o in summary.outcomes} == {"dry run"}
    assert "dry run: nothing published or deployed" in summary.notes
    # The check pins the commit's immutable tag, never the moving one.
    err = capsys.readouterr().err
    old = world.old_reference("brain-gateway")
    assert f"would set BRAIN_GATEWAY_IMAGE {old} -> {world.image('brain-gateway')}:staging-{SHORT}" in err


async def test_a_dry_run_with_skip_build_shows_the_digest_pins_a_real_run_would_write(world, capsys):
    """--dry-run --skip-build: the images exist, so the check pins their digests (as the real run), not tags."""
    published = {s: await world.seed(s, [f"staging-{SHORT}"]) for s in SERVICES}

    summary = await flows.deploy(
        world.plan(),
        engine=None,
        credentials=world.credentials(),
        options=world.options(dry_run=True, skip_build=True),
        progress=Progress(),
    )

    assert summary.ok, render_text(summary)
    assert world.writes() == []
    err = capsys.readouterr().err
    old = world.old_reference("brain-gateway")
    assert f"would set BRAIN_GATEWAY_IMAGE {old} -> {world.image('brain-gateway')}@{published['brain-gateway']}" in err
    assert f"{world.image('brain-gateway')}:staging-{SHORT}" not in err


# -- refusals before any build ---------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"poll_interval_s": 0.0}, "--poll-interval"),
        ({"poll_interval_s": -1.0}, "--poll-interval"),
        ({"deploy_timeout_s": 0.0}, "--deploy-timeout"),
        ({"deploy_timeout_s": float("nan")}, "--deploy-timeout"),
        ({"concurrency": -1}, "--concurrency"),
    ],
)
def test_options_refuse_waits_that_would_spin_or_never_end(changes, flag):
    """A zero or negative poll interval would poll Dokploy in a busy loop; NaN never times out: usage errors."""
    with pytest.raises(UsageError, match=flag) as caught:
        flows.Options(**changes)
    assert caught.value.exit_code == 2


def test_credentials_strip_the_newline_a_secret_file_ends_with():
    """A trailing newline (echo key > file) is never part of a key; a blank secret counts as not given."""
    credentials = flows.Credentials(
        registry_token=SecretValue("GITHUB_TOKEN", "ghp_SECRETVALUE456\n"),
        dokploy_key=SecretValue("DOKPLOY_API_KEY", "  \n"),
        notify_webhook=SecretValue("SLACK_WEBHOOK_URL", " http://127.0.0.1:9/SECRETPATH\r\n"),
    )
    assert credentials.registry_token is not None
    assert credentials.registry_token.reveal() == "ghp_SECRETVALUE456"
    assert credentials.dokploy_key is None
    assert credentials.notify_webhook is not None
    assert credentials.notify_webhook.reveal() == "http://127.0.0.1:9/SECRETPATH"


@pytest.mark.parametrize("value", ["dk_SECRET VALUE123", "dk_SECRETVALUE123\x00", "dk_SECRETVALUE123\u00e9"])
def test_credentials_refuse_a_key_no_http_header_can_carry_without_echoing_it(value):
    """A space, a control or a non-ASCII character inside a key: one usage error naming the variable, not the value."""
    with pytest.raises(UsageError) as caught:
        flows.Credentials(dokploy_key=SecretValue("DOKPLOY_API_KEY", value))
    message = str(caught.value)
    assert "Dokploy API key from DOKPLOY_API_KEY" in message
    assert "SECRET" not in message


async def test_a_dokploy_key_with_a_trailing_newline_deploys_and_is_never_printed(world, capsys):
    """The newline is stripped at the boundary, so the HTTP library never quotes the key in an error."""
    for service in SERVICES:
        await world.seed(service, [f"staging-{SHORT}"])
    key = world.dokploy.api_key + "\n"

    summary = await flows.deploy(
        world.plan(),
        engine=None,
        credentials=replace(world.credentials(), dokploy_key=SecretValue("DOKPLOY_API_KEY", key)),
        options=world.options(skip_build=True),
        progress=Progress(),
    )

    assert summary.ok, render_text(summary)
    captured = capsys.readouterr()
    assert world.dokploy.api_key not in rendered(summary) + captured.out + captured.err


async def test_publishing_to_a_remote_registry_without_a_token_names_the_argument(world):
    """A non-loopback registry and no token: MissingSecretError naming --registry-token, nothing built."""
    text = services_toml(registry_host="ghcr.io", dokploy_url=world.dokploy.url, vps_url=world.vps.url)
    config = config_module.parse(text, file=str(world.config_path))
    engine = FakeEngine(None)

    with pytest.raises(MissingSecretError, match="--registry-token"):
        await flows.deploy(
            world.plan(config=config),
            engine=engine,
            credentials=world.credentials(registry_token=False),
            options=world.options(),
        )

    assert engine.calls == []
    assert world.dokploy.double.requests == []


async def test_deploying_without_a_dokploy_key_names_the_argument(world):
    """No Dokploy key: MissingSecretError naming --dokploy-key, before any build."""
    engine = FakeEngine(world.client)

    with pytest.raises(MissingSecretError, match="--dokploy-key"):
        await flows.deploy(
            world.plan(), engine=engine, credentials=world.credentials(dokploy_key=False), options=world.options()
        )

    assert engine.calls == []
    for service in SERVICES:
        assert await tags_of(world.client, world.repository(service)) == []


@pytest.mark.parametrize("problem", ["wrong key", "missing variable"])
async def test_a_dokploy_that_cannot_take_the_deploy_stops_it_before_anything_is_built(world, problem):
    """The targets are read first: a refused key or a missing image variable costs no build and no push."""
    credentials = world.credentials()
    if problem == "wrong key":
        credentials = replace(credentials, dokploy_key=SecretValue("DOKPLOY_API_KEY", "dk_wrong_key_0001"))
        expected: type[Exception] = DokployAuthError
    else:
        compose = world.dokploy.double.composes[FRONTEND_ID]
        compose.env = "\n".join(line for line in (compose.env or "").splitlines() if "CLIENT_PORTAL_IMAGE" not in line)
        expected = ConfigError
    engine = FakeEngine(world.client)

    with pytest.raises(expected):
        await flows.deploy(world.plan(), engine=engine, credentials=credentials, options=world.options())

    assert engine.calls == []
    for service in SERVICES:
        assert await tags_of(world.client, world.repository(service)) == []
    assert world.writes() == []


async def test_a_group_without_a_target_is_named_with_the_fix(world):
    """Production lacks the frontend's target: UsageError naming the group and the table to add, nothing built."""
    config = world.write_config(frontend_in_production=False)
    engine = FakeEngine(world.client)

    with pytest.raises(UsageError) as caught:
        await flows.deploy(
            world.plan("production", config=config),
            engine=engine,
            credentials=world.credentials(),
            options=world.options(),
        )

    message = str(caught.value)
    assert "group frontend has no Dokploy target for 'production'" in message
    assert "[groups.targets.production]" in message
    assert engine.calls == []
    assert world.dokploy.double.requests == []


# -- notify ----------------------------------------------------------------------


async def test_a_deploy_posts_its_summary_to_the_webhook_once(world):
    """notify.on success: one POST whose text carries the headline and a line per service."""
    world.write_config(notify_on=("success", "failure"))
    with serve_webhook() as hook:
        summary = await flows.deploy(
            world.plan(),
            engine=FakeEngine(world.client),
            credentials=world.credentials(webhook=hook.url),
            options=world.options(),
        )

    assert summary.ok
    assert len(hook.bodies) == 1
    text = hook.payloads()[0]["text"]
    assert text.startswith(summary.headline)
    for service in SERVICES:
        assert f"- {service}: built, deploy done, health passed" in text
    assert not [n for n in summary.notes if n.startswith("notification")]


@pytest.mark.parametrize("mode", ["error", "echo"])
async def test_a_failing_webhook_adds_a_note_and_the_deploy_still_succeeds(world, mode, capsys, caplog):
    """The hook answers 500 (or 404 echoing its URL): the run is OK with a note, and the URL is never shown."""
    caplog.set_level(logging.INFO)
    world.write_config(notify_on=("success",))
    with serve_webhook() as hook:
        hook.mode = mode
        summary = await flows.deploy(
            world.plan(),
            engine=FakeEngine(world.client),
            credentials=world.credentials(webhook=hook.url),
            options=world.options(),
            progress=Progress(),
        )

    assert summary.ok
    assert len(hook.bodies) == 1
    notes = [n for n in summary.notes if n.startswith("notification not sent")]
    assert len(notes) == 1
    assert f"answered HTTP {500 if mode == 'error' else 404}" in notes[0]
    output = [rendered(summary), *capsys.readouterr(), caplog.text]
    for text in output:
        assert hook.url not in text
        assert "s3cr3t-hook-token" not in text
    assert_no_secrets(*output)


async def test_status_fails_with_the_view_when_a_target_cannot_be_read(world):
    """A target Dokploy does not know makes status fail, still showing everything it could read."""
    healthy = await flows.status(
        world.config(), environment="staging", credentials=world.credentials(), options=world.options(), output="table"
    )
    assert "ERROR" not in healthy

    del world.dokploy.double.composes[FRONTEND_ID]
    with pytest.raises(flows.RunFailedError) as caught:
        await flows.status(
            world.config(),
            environment="staging",
            credentials=world.credentials(),
            options=world.options(),
            output="table",
        )
    assert "ERROR" in caught.value.message
    assert BACKEND_ID in caught.value.message  # the readable target is still shown
