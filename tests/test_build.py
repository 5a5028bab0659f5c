"""Tests for pipeline.build: the Dagger queries the build and publish recipes send.

No engine runs here. Dagger chains are lazy: the SDK records each call as a
selection and sends the whole query only when a value is awaited, through
``Context.execute``. So the recipes are checked on the query the real SDK builds,
and where a value is awaited an ``EngineDouble`` replaces ``Context.execute``:
it records the query it would have sent and answers like the engine would.
"""

from __future__ import annotations

from typing import Any

import anyio
import dagger
import pytest

from pipeline import config
from pipeline.build import (
    DaggerImageEngine,
    build_container,
    build_variants,
    named_build_secrets,
    native_platform,
    publish,
    publish_container,
    secrets_by_uri,
)
from pipeline.errors import MissingSecretError, PublishError, UsageError
from pipeline.plan import ServicePlan
from tests.support.engine_double import DIGEST, Query, query, query_error


def logs_in(q: Query) -> bool:
    """Whether a recorded query adds registry credentials."""
    return any(name == "withRegistryAuth" for name, _ in q)


def make_plan(**service: Any) -> ServicePlan:
    defaults: dict[str, Any] = {"name": "api", "context": "services/api"}
    spec = config.Service(**{**defaults, **service})
    return ServicePlan(
        name=spec.name,
        service=spec,
        group="backend",
        image=f"ghcr.io/acme/{spec.name}",
        registry="ghcr.io",
        repository=f"acme/{spec.name}",
        tags=("staging",),
        content_key="a" * 64,
        content_tag="src-aaaaaaaaaaaa",
        labels={"org.opencontainers.image.revision": "abc1234", "org.opencontainers.image.title": spec.name},
    )


SOURCE_QUERY: Query = [("host", {}), ("directory", {"path": "/repo"})]


def source(client: dagger.Client) -> dagger.Directory:
    return client.host().directory("/repo")


def test_the_build_uses_the_context_directory_dockerfile_target_args_platform_and_labels():
    """Only the context is the build context; every build setting and label reaches dockerBuild."""
    client = dagger.Client()
    plan = make_plan(dockerfile="docker/Dockerfile.prod", target="runtime", build_args={"NODE_ENV": "production"})
    secret = client.set_secret("npm_token", "not-a-real-token")

    container = build_container(source(client), plan, platform="linux/arm64", secrets=[secret])

    assert query(container) == [
        *SOURCE_QUERY,
        ("directory", {"path": "services/api"}),
        (
            "dockerBuild",
            {
                "dockerfile": "docker/Dockerfile.prod",
                "platform": "linux/arm64",
                "buildArgs": [{"name": "NODE_ENV", "value": "production"}],
                "target": "runtime",
                "secrets": [[("setSecret", {"name": "npm_token", "plaintext": "not-a-real-token"})]],
            },
        ),
        ("withLabel", {"name": "org.opencontainers.image.revision", "value": "abc1234"}),
        ("withLabel", {"name": "org.opencontainers.image.title", "value": "api"}),
    ]


def test_defaults_leave_the_dockerfile_target_and_platform_to_the_engine():
    """A plain service sends no target, no platform and the default Dockerfile name."""
    container = build_container(source(dagger.Client()), make_plan())
    assert query(container)[3] == ("dockerBuild", {})


def test_a_target_override_builds_another_stage():
    """The test stage is built from the same context with its own target."""
    container = build_container(source(dagger.Client()), make_plan(target="runtime"), target="test")
    assert query(container)[3] == ("dockerBuild", {"target": "test"})


def test_one_variant_is_built_per_platform_in_order():
    """Each declared platform gets its own dockerBuild."""
    plan = make_plan(platforms=("linux/amd64", "linux/arm64"))
    variants = build_variants(source(dagger.Client()), plan, [])
    assert [query(v)[3][1]["platform"] for v in variants] == ["linux/amd64", "linux/arm64"]


async def test_build_secrets_are_read_and_named_by_their_dockerfile_id(engine):
    """Each secret is read from its URI, then re-created under the id the Dockerfile mounts."""
    engine.answers["plaintext"] = lambda q: {"env://NPM_TOKEN": "npm-value", "file://./pip.conf": "pip-value"}[
        q[0][1]["uri"]
    ]
    service = config.Service(
        name="web", context="web", secrets={"npm_token": "env://NPM_TOKEN", "pip_conf": "file://./pip.conf"}
    )

    secrets = await named_build_secrets(service, client=dagger.Client())

    assert engine.requests == [
        [("secret", {"uri": "env://NPM_TOKEN"}), ("plaintext", {})],
        [("secret", {"uri": "file://./pip.conf"}), ("plaintext", {})],
    ]
    assert [query(s) for s in secrets] == [
        [("setSecret", {"name": "npm_token", "plaintext": "npm-value"})],
        [("setSecret", {"name": "pip_conf", "plaintext": "pip-value"})],
    ]


async def test_module_mode_reads_build_secrets_from_the_arguments_the_caller_passed(engine):
    """Given secrets (keyed by URI) are used instead of resolving the URI inside the runtime container."""
    client = dagger.Client()
    passed = client.load_secret_from_id(dagger.SecretID("caller-npm-token"))
    engine.answers["plaintext"] = lambda q: "npm-value"
    service = config.Service(name="web", context="web", secrets={"npm_token": "env://NPM_TOKEN"})

    (secret,) = await named_build_secrets(service, client=client, given={"env://NPM_TOKEN": passed})

    assert engine.requests == [[*query(passed), ("plaintext", {})]]
    assert ("secret", {"uri": "env://NPM_TOKEN"}) not in engine.requests[0]
    assert query(secret) == [("setSecret", {"name": "npm_token", "plaintext": "npm-value"})]


async def test_module_mode_names_the_flag_for_a_build_secret_not_passed(engine):
    """In a module, a declared secret the caller did not pass is an error saying which flag to add."""
    service = config.Service(name="web", context="web", secrets={"npm_token": "env://NPM_TOKEN"})

    with pytest.raises(MissingSecretError) as caught:
        await named_build_secrets(service, client=dagger.Client(), given={})

    assert str(caught.value) == (
        "web: build secret 'npm_token' comes from env://NPM_TOKEN: pass --build-secrets=env://NPM_TOKEN "
        "(dagger call reads secrets on your machine only when they are arguments)"
    )
    assert engine.requests == []


async def test_secrets_passed_as_arguments_are_keyed_by_their_uri(engine):
    """Each argument secret is asked for its URI, the key services.toml uses."""
    client = dagger.Client()
    first = client.load_secret_from_id(dagger.SecretID("a"))
    second = client.load_secret_from_id(dagger.SecretID("b"))
    engine.answers["uri"] = lambda q: {"a": "env://NPM_TOKEN", "b": "file://./pip.conf"}[q[0][1]["id"]]

    assert await secrets_by_uri([first, second]) == {"env://NPM_TOKEN": first, "file://./pip.conf": second}
    assert await secrets_by_uri(None) == {}


async def test_a_missing_secret_variable_names_the_service_secret_and_variable(engine):
    """The engine cannot find the variable: one MissingSecretError saying what to set, no value in it."""
    engine.answers["plaintext"] = lambda q: (
        "first-secret-value" if q[0][1]["uri"] == "env://FIRST" else query_error('secret env var not found: "NPM..."')
    )
    service = config.Service(
        name="web", context="web", secrets={"first": "env://FIRST", "npm_token": "env://NPM_TOKEN"}
    )

    with pytest.raises(MissingSecretError) as caught:
        await named_build_secrets(service, client=dagger.Client())

    message = str(caught.value)
    assert message.startswith("web: build secret 'npm_token' comes from env://NPM_TOKEN, which could not be read")
    assert "set the environment variable NPM_TOKEN where dagger runs" in message
    assert "first-secret-value" not in message


async def test_an_unreadable_secret_of_another_provider_says_where_it_comes_from(engine):
    """Non-env sources get a fix naming the URI and the config key."""
    engine.answers["plaintext"] = lambda q: query_error("op: item not found")
    service = config.Service(name="web", context="web", secrets={"npm_token": "op://ci/npm/token"})

    with pytest.raises(
        MissingSecretError, match=r"make op://ci/npm/token readable .* services\.web\.secrets\.npm_token"
    ):
        await named_build_secrets(service, client=dagger.Client())


def test_a_single_platform_is_published_from_its_own_container_with_auth():
    """One variant: registry auth is added to that container, no platform variants."""
    client = dagger.Client()
    variant = build_container(source(client), make_plan())
    token = client.set_secret("registry_token", "t")

    container, variants = publish_container([variant], registry="ghcr.io", username="bot", token=token, client=client)

    assert variants == []
    assert query(container)[:-1] == query(variant)
    assert query(container)[-1] == (
        "withRegistryAuth",
        {
            "address": "ghcr.io",
            "username": "bot",
            "secret": [("setSecret", {"name": "registry_token", "plaintext": "t"})],
        },
    )


def test_several_platforms_are_published_as_one_index_from_an_empty_container():
    """Multi-platform: an empty container with auth carries the variants."""
    client = dagger.Client()
    plan = make_plan(platforms=("linux/amd64", "linux/arm64"))
    built = build_variants(source(client), plan, [])

    container, variants = publish_container(built, registry="ghcr.io", token=client.set_secret("t", "t"), client=client)

    assert variants == built
    assert [name for name, _ in query(container)] == ["container", "withRegistryAuth"]
    assert query(container)[1][1]["username"] == "token"


def test_without_a_token_no_auth_is_added():
    """A local registry needs no credentials: the variant is published as it is."""
    variant = build_container(source(dagger.Client()), make_plan())
    container, _ = publish_container([variant], registry="127.0.0.1:5000")
    assert container is variant


def test_nothing_to_publish_is_a_usage_error():
    """An empty variant list is refused before any request."""
    with pytest.raises(UsageError, match="nothing to publish"):
        publish_container([], registry="ghcr.io")


async def test_publish_returns_the_pinned_reference_and_sends_the_variants(engine):
    """publish asks the engine to push the address with every platform variant."""
    client = dagger.Client()
    built = build_variants(source(client), make_plan(platforms=("linux/amd64", "linux/arm64")), [])

    reference = await publish(built, "ghcr.io/acme/api:src-1", service="api", registry="ghcr.io", client=client)

    assert reference == f"ghcr.io/acme/api:src-1@{DIGEST}"
    (asked,) = engine.asked_for("publish")
    assert asked[-1] == (
        "publish",
        {"address": "ghcr.io/acme/api:src-1", "platformVariants": [query(v) for v in built]},
    )


async def test_a_refused_push_becomes_a_publish_error_naming_service_and_address(engine):
    """The engine's error is wrapped with the service and the address."""
    engine.answers["publish"] = lambda q: query_error("failed to push: 403 Forbidden\nmore detail")
    variant = build_container(source(dagger.Client()), make_plan())

    with pytest.raises(PublishError) as caught:
        await publish([variant], "ghcr.io/acme/api:staging", service="api", registry="ghcr.io")

    assert caught.value.service == "api"
    assert caught.value.reference == "ghcr.io/acme/api:staging"
    assert caught.value.detail == "failed to push: 403 Forbidden more detail"


@pytest.mark.parametrize(
    ("platforms", "engine_platform", "expected"),
    [
        (("linux/amd64", "linux/arm64"), "linux/arm64", "linux/arm64"),
        (("linux/amd64", "linux/arm64/v8"), "linux/arm64", "linux/arm64/v8"),
        (("linux/arm64",), "linux/amd64", "linux/arm64"),
    ],
)
def test_tests_run_on_the_platform_the_engine_runs_natively(platforms, engine_platform, expected):
    """The native platform is preferred; without it, the first declared one (emulated)."""
    assert native_platform(platforms, engine_platform) == expected


async def test_the_engine_builds_every_platform_and_keeps_the_native_one_for_checks(engine):
    """build reads secrets, syncs each variant and picks the engine's platform for tests."""
    engine.answers["defaultPlatform"] = lambda q: "linux/arm64"
    engine.answers["plaintext"] = lambda q: "value"
    client = dagger.Client()
    plan = make_plan(platforms=("linux/amd64", "linux/arm64"), secrets={"npm": "env://NPM"})
    images = DaggerImageEngine(source(client), client=client)

    built = await images.build(plan)

    assert built.native_platform == "linux/arm64"
    assert query(built.native) == query(built.variants[1])
    synced = [q[:-1] for q in engine.asked_for("sync")]
    assert sorted(map(str, synced)) == sorted(str(query(v)) for v in built.variants)
    assert [query(s) for s in built.secrets] == [[("setSecret", {"name": "npm", "plaintext": "value"})]]


async def test_the_engine_publishes_with_its_credentials(engine):
    """publish goes through the registry auth the engine was given, for the plan's registry."""
    engine.answers["plaintext"] = lambda q: "t"
    client = dagger.Client()
    token = client.set_secret("registry_token", "t")
    plan = make_plan()
    images = DaggerImageEngine(source(client), registry_user="bot", token=token, client=client)
    built = await images.build(plan)

    reference = await images.publish(plan, built, "ghcr.io/acme/api:src-aaaaaaaaaaaa")

    assert reference.endswith(DIGEST)
    (asked,) = engine.asked_for("publish")
    assert ("withRegistryAuth", {"address": "ghcr.io", "username": "bot", "secret": query(token)}) in asked


async def test_credentials_are_registered_once_per_registry_before_building(engine):
    """A private FROM image needs the session's registry auth before the first build evaluates."""
    engine.answers["plaintext"] = lambda q: "t"
    client = dagger.Client()
    token = client.set_secret("registry_token", "t")
    images = DaggerImageEngine(source(client), registry_user="bot", token=token, client=client)

    async with anyio.create_task_group() as group:
        for name in ("api", "web", "worker"):
            group.start_soon(images.build, make_plan(name=name))

    auth = [("container", {}), ("withRegistryAuth", {"address": "ghcr.io", "username": "bot", "secret": query(token)})]
    registered = [q for q in engine.requests if q[:2] == auth]
    assert registered == [[*auth, ("sync", {})]]
    assert engine.asked_for("sync")[0] == registered[0], "registered before any image is built"
    assert len(engine.asked_for("sync")) == 1 + 3


async def test_a_token_without_a_user_name_is_registered_as_publish_sends_it(engine):
    """--registry-token alone publishes (as user "token"); pulls of a private base image get the same login."""
    engine.answers["plaintext"] = lambda q: "t"
    client = dagger.Client()
    token = client.set_secret("registry_token", "t")
    await DaggerImageEngine(source(client), token=token, client=client).build(make_plan())
    (registered,) = [q for q in engine.requests if logs_in(q)]
    assert ("withRegistryAuth", {"address": "ghcr.io", "username": "token", "secret": query(token)}) in registered


async def test_a_registration_that_failed_is_tried_again_by_the_next_build(engine):
    """Only a registration that went through is remembered."""
    engine.answers["plaintext"] = lambda q: "t"
    failures = [query_error("registry auth store unavailable")]

    def sync(q: Query) -> object:
        return failures.pop() if logs_in(q) and failures else "an-id"

    engine.answers["sync"] = sync
    client = dagger.Client()
    images = DaggerImageEngine(source(client), registry_user="bot", token=client.set_secret("t", "t"), client=client)
    with pytest.raises(dagger.QueryError):
        await images.build(make_plan())
    await images.build(make_plan())
    assert len([q for q in engine.asked_for("sync") if logs_in(q)]) == 2


async def test_without_credentials_builds_register_no_auth(engine):
    """Without a token (plan, build, test), nothing is registered: public FROM images need none."""
    client = dagger.Client()
    await DaggerImageEngine(source(client), client=client).build(make_plan())
    assert not any(logs_in(q) for q in engine.requests)


async def test_an_empty_token_is_not_registered(engine):
    """An unset repository secret arrives empty; logging in with it would break anonymous pulls."""
    engine.answers["plaintext"] = lambda q: ""
    client = dagger.Client()
    token = client.secret("env://GITHUB_TOKEN")
    await DaggerImageEngine(source(client), registry_user="bot", token=token, client=client).build(make_plan())
    assert engine.asked_for("plaintext") == [[("secret", {"uri": "env://GITHUB_TOKEN"}), ("plaintext", {})]]
    assert not any(logs_in(q) for q in engine.requests)


async def test_reports_are_read_as_xml_files_and_exported_when_asked(engine, tmp_path):
    """read_reports globs the reports directory for XML, reads each file, and exports it first."""
    client = dagger.Client()
    reports = source(client).directory("reports")
    engine.answers["glob"] = lambda q: ["sub/b.xml", "a.xml"]
    engine.answers["contents"] = lambda q: f"<testsuite name='{q[-2][1]['path']}'/>"
    engine.answers["export"] = lambda q: q[-1][1]["path"]
    images = DaggerImageEngine(source(client), reports_dir=tmp_path, client=client)

    texts = await images.read_reports("api", reports)

    assert texts == {"a.xml": "<testsuite name='a.xml'/>", "sub/b.xml": "<testsuite name='sub/b.xml'/>"}
    (exported,) = engine.asked_for("export")
    assert exported[-1][1]["path"] == str(tmp_path / "api")
    assert engine.asked_for("glob")[0][-1][1] == {"pattern": "**/*.xml"}


async def test_reports_of_something_else_than_a_directory_are_none(engine):
    """A fake or absent reports handle gives no files and asks the engine nothing."""
    images = DaggerImageEngine(source(dagger.Client()), client=dagger.Client())

    assert await images.read_reports("api", None) == {}
    assert engine.requests == []


async def test_test_reports_needs_a_declared_reports_path(engine):
    """A service without test.reports gets a message saying where to declare them."""
    images = DaggerImageEngine(source(dagger.Client()), client=dagger.Client())

    with pytest.raises(UsageError) as caught:
        await images.reports_directory(make_plan())
    assert str(caught.value) == (
        'api declares no test reports: add reports = "/path/in/container" under [services.api.test]'
    )
    assert engine.requests == []
