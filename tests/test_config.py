"""services.toml validation: every mistake is one message naming file, key, expectation and fix."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline import config as config_module
from pipeline.config import UPLOAD_COPY_PREFIX, check_source, dockerfile_stages, load, parse
from pipeline.errors import ConfigError
from tests.support.sources import (
    PYTHON,
    REAL_CONFIG,
    SHA,
    base_config,
    dockerfile_text,
    git_env,
    to_toml,
    write_sources,
)

Mutation = Callable[[dict[str, Any]], object]

SERVICE_KEYS = "context, dockerfile, target, build_args, platforms, secrets, image_variable, smoke, test"
TOP_KEYS = "registry, project, dokploy, environments, services, groups, notify"
TARGET_KEYS = "compose_id, application_id, compose_file, health"
HEALTH_KEYS = "name, url, expect_status, contains, timeout"
STAGING_TARGET = "groups[0] (backend).targets.staging"

# Values shaped like credentials people paste by mistake (built here, so no scanner flags this file).
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
RANDOM_KEY = "9fK2mQ7xLp4RtV8wZc1NbH6jDy3GsE5aUo0TqWe"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T0000000/B0000000/" + "x" * 24
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "c2lnbmF0dXJlLXZhbHVl"
AWS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"
SECRET_ADVICE = (
    "services.toml is committed, so keys and tokens never go in it. "
    "Pass them as Dagger secrets (--registry-token=env://GITHUB_TOKEN) or name an "
    "environment variable (env://NAME) instead"
)


def problem(mutate: Mutation) -> str:
    """The message parse gives for the base config after ``mutate``."""
    data = base_config()
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse(to_toml(data))
    return str(caught.value)


def api(data: dict[str, Any]) -> Any:
    return data["services"]["api"]


def staging_target(data: dict[str, Any]) -> Any:
    return data["groups"][0]["targets"]["staging"]


def health(data: dict[str, Any]) -> Any:
    return staging_target(data)["health"][0]


def setter(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: object) -> Mutation:
    """A mutation setting ``key`` to ``value`` in the table ``path`` picks."""
    return lambda data: path(data).__setitem__(key, value)


def deleter(path: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Mutation:
    """A mutation removing ``key`` from the table ``path`` picks."""
    return lambda data: path(data).pop(key)


def root(data: dict[str, Any]) -> dict[str, Any]:
    return data


def registry(data: dict[str, Any]) -> Any:
    return data["registry"]


def staging(data: dict[str, Any]) -> Any:
    return data["environments"]["staging"]


def smoke(data: dict[str, Any]) -> Any:
    return api(data)["smoke"]


def spec_of(data: dict[str, Any]) -> Any:
    return api(data)["test"]


def group(index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda data: data["groups"][index]


EXACT = [
    # -- unknown keys, with the path down to the key and the nearest allowed one
    pytest.param(
        setter(root, "servics", {}),
        f"services.toml: servics: unknown key (did you mean 'services'?); allowed keys: {TOP_KEYS}",
        id="unknown-top-level",
    ),
    pytest.param(
        setter(api, "dockerfle", "Dockerfile"),
        "services.toml: services.api.dockerfle: unknown key (did you mean 'dockerfile'?); "
        f"allowed keys: {SERVICE_KEYS}",
        id="unknown-service-key",
    ),
    pytest.param(
        setter(staging_target, "composeid", "x"),
        f"services.toml: {STAGING_TARGET}.composeid: unknown key (did you mean 'compose_id'?); "
        f"allowed keys: {TARGET_KEYS}",
        id="unknown-target-key",
    ),
    pytest.param(
        setter(health, "timout", 5),
        f"services.toml: {STAGING_TARGET}.health[0].timout: unknown key (did you mean 'timeout'?); "
        f"allowed keys: {HEALTH_KEYS}",
        id="unknown-health-key",
    ),
    pytest.param(
        setter(smoke, "prot", 8001),
        "services.toml: services.api.smoke.prot: unknown key (did you mean 'port'?); "
        "allowed keys: port, path, expect_status, timeout",
        id="unknown-smoke-key",
    ),
    pytest.param(
        setter(spec_of, "comand", ["pytest"]),
        "services.toml: services.api.test.comand: unknown key (did you mean 'command'?); "
        "allowed keys: stage, command, env, services, timeout, reports",
        id="unknown-test-key",
    ),
    pytest.param(
        setter(group(0), "service", ["api"]),
        "services.toml: groups[0].service: unknown key (did you mean 'services'?); "
        "allowed keys: name, services, targets",
        id="unknown-group-key",
    ),
    pytest.param(
        setter(registry, "zone", "eu"),
        "services.toml: registry.zone: unknown key; allowed keys: host, namespace, image_prefix",
        id="unknown-key-without-suggestion",
    ),
    # -- required sections and keys
    pytest.param(
        deleter(root, "services"),
        "services.toml: services: is required; see the README for an example",
        id="missing-services",
    ),
    pytest.param(
        deleter(root, "registry"),
        "services.toml: registry: is required; see the README for an example",
        id="missing-registry",
    ),
    pytest.param(
        deleter(root, "environments"),
        "services.toml: environments: is required; see the README for an example",
        id="missing-environments",
    ),
    pytest.param(
        deleter(root, "groups"),
        "services.toml: groups: is required; see the README for an example",
        id="missing-groups",
    ),
    pytest.param(
        deleter(registry, "host"),
        'services.toml: registry.host: is required (for example host = "ghcr.io")',
        id="missing-registry-host",
    ),
    pytest.param(
        deleter(api, "context"),
        "services.toml: services.api.context: is required: the build context, relative to the source root",
        id="missing-context",
    ),
    pytest.param(
        deleter(staging, "branch"),
        "services.toml: environments.staging.branch: is required: the git branch that deploys to staging",
        id="environment-without-branch",
    ),
    pytest.param(
        deleter(staging, "tags"),
        'services.toml: environments.staging.tags: is required: the tag templates, e.g. ["{branch}-{sha}"]',
        id="environment-without-tags",
    ),
    pytest.param(
        setter(root, "services", {}),
        "services.toml: services: expected at least one [services.<name>] table",
        id="no-services",
    ),
    pytest.param(
        setter(root, "groups", {"name": "backend"}),
        "services.toml: groups: expected at least one [[groups]] table, in deploy order",
        id="groups-not-an-array",
    ),
    # -- wrong types
    pytest.param(
        setter(registry, "host", 5),
        "services.toml: registry.host: expected a string, got an integer",
        id="string-got-integer",
    ),
    pytest.param(
        setter(api, "platforms", "linux/amd64"),
        "services.toml: services.api.platforms: expected a list of strings, got a string",
        id="list-got-string",
    ),
    pytest.param(
        setter(api, "context", ["services/api"]),
        "services.toml: services.api.context: expected a string, got a list",
        id="string-got-list",
    ),
    pytest.param(
        setter(api, "build_args", ["PYTHON_VERSION=3.12"]),
        "services.toml: services.api.build_args: expected a table of strings, got a list",
        id="table-got-list",
    ),
    pytest.param(
        setter(lambda d: api(d)["build_args"], "PYTHON_VERSION", 3.12),
        "services.toml: services.api.build_args.PYTHON_VERSION: expected a string, got a number",
        id="build-arg-got-number",
    ),
    pytest.param(
        setter(smoke, "timeout", True),
        "services.toml: services.api.smoke.timeout: expected a number, got a boolean",
        id="number-got-boolean",
    ),
    pytest.param(
        setter(smoke, "timeout", "60"),
        "services.toml: services.api.smoke.timeout: expected a number, got a string",
        id="number-got-string",
    ),
    pytest.param(
        setter(spec_of, "command", "pytest -q"),
        "services.toml: services.api.test.command: expected a list of strings, got a string",
        id="command-got-string",
    ),
    pytest.param(
        setter(root, "registry", "ghcr.io"),
        "services.toml: registry: expected a table, got a string",
        id="table-got-string",
    ),
    pytest.param(
        setter(api, "context", datetime.date(2024, 1, 2)),
        "services.toml: services.api.context: expected a string, got a date/time",
        id="string-got-date",
    ),
    pytest.param(
        setter(staging_target, "health", {"url": "http://127.0.0.1:8001/health"}),
        f"services.toml: {STAGING_TARGET}.health: expected a list of [[{STAGING_TARGET}.health]] tables",
        id="health-not-an-array",
    ),
    pytest.param(
        setter(root, "notify", {"on": ["always"]}),
        "services.toml: notify.on[0]: expected 'success' or 'failure', got 'always'",
        id="notify-unknown-event",
    ),
    # -- groups
    pytest.param(
        setter(group(1), "name", "backend"),
        "services.toml: groups[1] (backend).name: group 'backend' is defined twice",
        id="duplicate-group-name",
    ),
    pytest.param(
        setter(group(1), "services", ["web", "api"]),
        "services.toml: groups[1] (frontend).services[1]: service 'api' is already in group 'backend'; "
        "a service deploys with one group",
        id="service-in-two-groups",
    ),
    pytest.param(
        setter(group(1), "services", []),
        "services.toml: groups: service web in no group; add each to the services list of the group it deploys with",
        id="service-in-no-group",
    ),
    pytest.param(
        setter(group(0), "services", ["api", "apii"]),
        "services.toml: groups[0] (backend).services[1]: unknown service 'apii'; defined services: api, web",
        id="group-names-unknown-service",
    ),
    pytest.param(
        lambda d: group(0)(d)["targets"].__setitem__("stagin", {"compose_id": "x1"}),
        "services.toml: groups[0] (backend).targets.stagin: unknown environment 'stagin'; "
        "defined environments: staging, production",
        id="target-unknown-environment",
    ),
    pytest.param(
        setter(staging_target, "application_id", "app1"),
        f"services.toml: {STAGING_TARGET}: needs exactly one of compose_id or application_id (from the Dokploy UI)",
        id="target-with-both-ids",
    ),
    pytest.param(
        deleter(staging_target, "compose_id"),
        f"services.toml: {STAGING_TARGET}: needs exactly one of compose_id or application_id (from the Dokploy UI)",
        id="target-with-neither-id",
    ),
    pytest.param(
        lambda d: group(1)(d)["targets"]["staging"].__setitem__("compose_file", "x.yml"),
        "services.toml: groups[1] (frontend).targets.staging.compose_file: only applies to compose targets",
        id="compose-file-on-application",
    ),
    # -- environments and tag templates
    pytest.param(
        setter(staging, "tags", ["staging-{tag}"]),
        "services.toml: environments.staging.tags[0]: 'staging-{tag}' uses unknown placeholder {tag}; "
        "allowed: {sha}, {branch}, {environment}",
        id="tag-unknown-placeholder",
    ),
    pytest.param(
        setter(staging, "tags", ["staging-{sha"]),
        "services.toml: environments.staging.tags[0]: 'staging-{sha' is not a valid template "
        "(expected '}' before end of string); use {sha}, {branch} or {environment}",
        id="tag-bad-grammar",
    ),
    pytest.param(
        setter(staging, "tags", ["staging", "latest"]),
        "services.toml: environments.staging.tags: needs at least one immutable tag containing {sha} "
        '(deploys pin it); add "{branch}-{sha}"',
        id="tags-without-sha",
    ),
    pytest.param(
        setter(staging, "tags", ["-{sha}"]),
        "services.toml: environments.staging.tags[0]: '-{sha}' does not render to a valid tag "
        "(got '-abcdef1-dirty'); tags are letters, digits, '_', '.', '-', at most 128 characters, "
        "not starting with '.' or '-'",
        id="tag-leading-dash",
    ),
    pytest.param(
        setter(staging, "tags", ["{sha:.3}-{sha}"]),
        "services.toml: environments.staging.tags[0]: '{sha:.3}-{sha}' formats a placeholder; "
        "write {sha}, {branch} or {environment} plainly",
        id="tag-format-spec",
    ),
    pytest.param(
        setter(staging, "tags", ["{sha!x}"]),
        "services.toml: environments.staging.tags[0]: '{sha!x}' formats a placeholder; "
        "write {sha}, {branch} or {environment} plainly",
        id="tag-bad-conversion",
    ),
    pytest.param(
        setter(staging, "tags", ["{branch}-{branch}-{sha}"]),
        "services.toml: environments.staging.tags[0]: '{branch}-{branch}-{sha}' renders to 215 characters "
        "for a long branch name; tags are at most 128: use {branch} once and keep the rest short",
        id="tag-too-long",
    ),
    pytest.param(
        setter(staging, "tags", []),
        "services.toml: environments.staging.tags: must not be empty",
        id="tags-empty",
    ),
    pytest.param(
        setter(staging, "branch", "main"),
        "services.toml: environments.production.branch: branch 'main' already deploys to environment 'staging'",
        id="two-environments-one-branch",
    ),
    pytest.param(
        lambda d: d["environments"].__setitem__("Prod", {"branch": "prod", "tags": ["{sha}"]}),
        "services.toml: environments.Prod: environment names are lower-case words joined by '-'",
        id="environment-name-upper-case",
    ),
    # -- platforms and image names
    pytest.param(
        setter(api, "platforms", ["linux-amd64"]),
        "services.toml: services.api.platforms[0]: expected a platform like 'linux/amd64', got 'linux-amd64'",
        id="invalid-platform",
    ),
    pytest.param(
        setter(api, "platforms", ["linux/amd64", "linux/amd64"]),
        "services.toml: services.api.platforms: lists a platform twice",
        id="duplicate-platform",
    ),
    pytest.param(
        setter(registry, "namespace", "Bizoholic-Digital"),
        "services.toml: registry.namespace: 'Bizoholic-Digital' is not a valid image path: use lower-case "
        "letters, digits, and '.', '_', '-' between them (GHCR owners must be lower-cased)",
        id="namespace-upper-case",
    ),
    pytest.param(
        setter(registry, "host", "GHCR.io"),
        "services.toml: registry.host: expected a lower-case host name like 'ghcr.io', got 'GHCR.io'",
        id="host-upper-case",
    ),
    pytest.param(
        setter(registry, "image_prefix", "Shop-"),
        "services.toml: registry.image_prefix: 'Shop-' cannot start an image name: use lower-case letters and "
        "digits, ending in '-', '_' or '.' to join the service name (like \"bizosaas-\")",
        id="image-prefix-upper-case",
    ),
    pytest.param(
        lambda d: d["services"].__setitem__("api_v2", {"context": "x"}),
        "services.toml: services.api_v2: service names are lower-case letters and digits joined by '-' "
        "(they name the image)",
        id="service-name-underscore",
    ),
    pytest.param(
        lambda d: d["services"].__setitem__("Api", {"context": "x"}),
        "services.toml: services.Api: service names are lower-case letters and digits joined by '-' "
        "(they name the image)",
        id="service-name-upper-case",
    ),
    # -- paths and URLs
    pytest.param(
        setter(api, "context", "../elsewhere"),
        "services.toml: services.api.context: must be a path relative to the source root without '..', "
        "got '../elsewhere'",
        id="context-escapes-root",
    ),
    pytest.param(
        setter(api, "dockerfile", "/etc/Dockerfile"),
        "services.toml: services.api.dockerfile: must be a path relative to the source root without '..', "
        "got '/etc/Dockerfile'",
        id="dockerfile-absolute",
    ),
    pytest.param(
        setter(api, "context", "  "),
        "services.toml: services.api.context: must not be empty",
        id="context-blank",
    ),
    pytest.param(
        setter(root, "dokploy", {"url": "dk.example.test"}),
        "services.toml: dokploy.url: expected an http:// or https:// URL, got 'dk.example.test'",
        id="url-without-scheme",
    ),
    pytest.param(
        setter(health, "url", "ftp://127.0.0.1/health"),
        f"services.toml: {STAGING_TARGET}.health[0].url: expected an http:// or https:// URL, "
        "got 'ftp://127.0.0.1/health'",
        id="url-wrong-scheme",
    ),
    # -- numbers
    pytest.param(
        setter(health, "expect_status", 600),
        f"services.toml: {STAGING_TARGET}.health[0].expect_status: expected an HTTP status code (100-599), got 600",
        id="status-too-high",
    ),
    pytest.param(
        setter(smoke, "expect_status", "200"),
        "services.toml: services.api.smoke.expect_status: expected an HTTP status code (100-599), got '200'",
        id="status-a-string",
    ),
    pytest.param(
        setter(smoke, "port", "8001"),
        "services.toml: services.api.smoke.port: expected a port number (1-65535), got a string",
        id="port-a-string",
    ),
    pytest.param(
        setter(smoke, "port", 70000),
        "services.toml: services.api.smoke.port: expected a port number (1-65535), got 70000",
        id="port-too-high",
    ),
    pytest.param(
        setter(smoke, "port", 0),
        "services.toml: services.api.smoke.port: expected a port number (1-65535), got 0",
        id="port-zero",
    ),
    pytest.param(
        setter(health, "timeout", -5),
        f"services.toml: {STAGING_TARGET}.health[0].timeout: must be greater than 0, got -5",
        id="timeout-negative",
    ),
    pytest.param(
        setter(health, "timeout", float("nan")),
        f"services.toml: {STAGING_TARGET}.health[0].timeout: expected a finite number of seconds, got nan",
        id="timeout-nan",
    ),
    pytest.param(
        setter(spec_of, "timeout", float("inf")),
        "services.toml: services.api.test.timeout: expected a finite number of seconds, got inf",
        id="timeout-inf",
    ),
    pytest.param(
        setter(smoke, "path", "health"),
        "services.toml: services.api.smoke.path: should start with '/', got 'health'",
        id="smoke-path-relative",
    ),
    # -- tests and their service containers
    pytest.param(
        setter(api, "test", {"reports": "/reports"}),
        "services.toml: services.api.test: needs a 'stage' (a Dockerfile stage that runs the tests) or a 'command'",
        id="test-without-stage-or-command",
    ),
    pytest.param(
        lambda d: spec_of(d)["services"][0].pop("image"),
        "services.toml: services.api.test.services[0].image: is required for a test service container",
        id="test-dependency-without-image",
    ),
    pytest.param(
        setter(spec_of, "reports", "reports/junit"),
        "services.toml: services.api.test.reports: should be an absolute path inside the container, "
        "got 'reports/junit'",
        id="reports-not-absolute",
    ),
    # -- secrets and variables
    pytest.param(
        setter(api, "secrets", {"npm": "NPM_TOKEN"}),
        'services.toml: services.api.secrets.npm: expected where the secret comes from, like "env://NPM_TOKEN", '
        "got 'NPM_TOKEN'",
        id="secret-uri-without-scheme",
    ),
    pytest.param(
        setter(api, "secrets", {"npm token": "env://NPM_TOKEN"}),
        "services.toml: services.api.secrets.npm token: secret ids are letters, digits, '.', '_' and '-'",
        id="secret-id-with-space",
    ),
    pytest.param(
        lambda d: (
            d["services"]["api"].__setitem__("secrets", {"npm": "env://API_NPM"}),
            d["services"]["web"].__setitem__("secrets", {"npm": "env://WEB_NPM"}),
        ),
        "services.toml: services.web.secrets.npm: comes from env://WEB_NPM, but service 'api' takes 'npm' from "
        "env://API_NPM; one secret id has one source: rename it in one Dockerfile (--mount=type=secret,id=...)",
        id="one-secret-id-two-sources",
    ),
    pytest.param(
        setter(lambda d: d["services"]["web"], "image_variable", "API_IMAGE"),
        "services.toml: services.web.image_variable: 'API_IMAGE' is already used by service 'api'",
        id="image-variable-twice",
    ),
    pytest.param(
        setter(api, "image_variable", "API-IMAGE"),
        "services.toml: services.api.image_variable: 'API-IMAGE' is not a valid environment variable name",
        id="image-variable-invalid",
    ),
    pytest.param(
        setter(api, "build_args", {"1ST": "x"}),
        "services.toml: services.api.build_args.1ST: names must be letters, digits and '_', not starting with a digit",
        id="build-arg-name-invalid",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), EXACT)
def test_each_mistake_has_one_exact_message(mutate: Mutation, expected: str) -> None:
    """Each broken variant of a valid config is refused with exactly the expected message."""
    assert problem(mutate) == expected


def test_the_base_config_is_valid() -> None:
    """The base config every mistake above starts from parses (so each failure is the mistake's)."""
    config = parse(to_toml(base_config()))
    assert list(config.services) == ["api", "web"]
    assert [g.name for g in config.groups] == ["backend", "frontend"]


@pytest.mark.parametrize(
    ("mutate", "secret"),
    [
        pytest.param(setter(lambda d: api(d)["build_args"], "TOKEN", GITHUB_TOKEN), GITHUB_TOKEN, id="github-token"),
        pytest.param(setter(lambda d: api(d)["build_args"], "API_KEY", RANDOM_KEY), RANDOM_KEY, id="random-40-chars"),
        pytest.param(setter(root, "dokploy", {"url": SLACK_HOOK}), SLACK_HOOK, id="slack-hook"),
        pytest.param(setter(spec_of, "env", {"AUTH": JWT}), JWT, id="jwt"),
        pytest.param(setter(health, "contains", AWS_KEY), AWS_KEY, id="aws-key"),
        pytest.param(setter(api, "secrets", {"npm": GITHUB_TOKEN}), GITHUB_TOKEN, id="token-as-secret-uri"),
        pytest.param(setter(staging_target, "compose_id", RANDOM_KEY), RANDOM_KEY, id="random-as-compose-id"),
    ],
)
def test_values_that_look_like_secrets_are_refused_without_echoing_them(mutate: Mutation, secret: str) -> None:
    """A pasted credential is refused with the 'looks like a secret' advice, and the value is not in the message."""
    message = problem(mutate)
    assert message.endswith(": looks like a secret; " + SECRET_ADVICE)
    assert secret not in message
    assert secret[:12] not in message


def test_a_key_that_looks_like_a_secret_is_not_echoed() -> None:
    """An unknown key shaped like a token is refused without repeating the key."""
    message = problem(setter(api, GITHUB_TOKEN, "x"))
    assert message == "services.toml: services.api: has a key that looks like a secret; " + SECRET_ADVICE
    assert GITHUB_TOKEN not in message


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        pytest.param(lambda d: d["services"].__setitem__(GITHUB_TOKEN, {"context": "x"}), "services", id="service"),
        pytest.param(lambda d: d["environments"].__setitem__(RANDOM_KEY, {}), "environments", id="environment"),
        pytest.param(setter(lambda d: api(d)["build_args"], GITHUB_TOKEN, "x"), "services.api.build_args", id="arg"),
        pytest.param(setter(api, "secrets", {RANDOM_KEY: "env://X"}), "services.api.secrets", id="secret-id"),
        pytest.param(
            setter(lambda d: d["groups"][0]["targets"], GITHUB_TOKEN, {"compose_id": "x"}),
            "groups[0].targets",
            id="target-environment",
        ),
    ],
)
def test_a_secret_pasted_as_any_table_key_is_refused_without_echoing_it(mutate: Mutation, where: str) -> None:
    """Service, environment, build-arg and secret names are keys too: a token there is refused, not repeated."""
    message = problem(mutate)
    assert message == f"services.toml: {where}: has a key that looks like a secret; " + SECRET_ADVICE


def test_a_secret_pasted_as_a_status_code_is_not_echoed() -> None:
    """expect_status echoes what it got, so a token there gets the 'looks like a secret' advice instead."""
    message = problem(setter(health, "expect_status", RANDOM_KEY))
    assert message == f"services.toml: {STAGING_TARGET}.health[0].expect_status: looks like a secret; " + SECRET_ADVICE


def test_long_names_joined_by_dashes_are_not_mistaken_for_secrets() -> None:
    """A long service name with digits, and the image variable derived from it, are words, not tokens."""
    data = base_config()
    name = "bizosaas-marketplace-frontend-v2"
    data["services"][name] = {"context": "apps/marketplace"}
    data["groups"][1]["services"].append(name)
    config = parse(to_toml(data))
    assert config.services[name].image_variable == "BIZOSAAS_MARKETPLACE_FRONTEND_V2_IMAGE"


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    """user:password@ in a URL is refused, and neither part appears in the message."""
    message = problem(setter(root, "dokploy", {"url": "https://deploy:hunter2pass@dk.example.test"}))
    assert message == (
        "services.toml: dokploy.url: must not carry credentials (user:password@); pass them as Dagger secrets"
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("bizosaas/frontend/apps/business-directory-and-more", id="long-path"),
        pytest.param("uimFISkhg1KACigb2CaGz", id="dokploy-id"),
        pytest.param("ghcr.io/bizoholic-digital/bizosaas-brain-gateway", id="image-name"),
        pytest.param("a-very-long-but-plain-words-only-build-argument", id="words"),
    ],
)
def test_ordinary_long_values_are_not_mistaken_for_secrets(value: str) -> None:
    """Paths, ids, images and long words pass the secret check."""
    data = base_config()
    api(data)["build_args"]["VALUE"] = value
    assert parse(to_toml(data)).services["api"].build_args["VALUE"] == value


def test_invalid_toml_names_the_file_and_the_position() -> None:
    """Text that is not TOML gives one message with the file and tomllib's position."""
    with pytest.raises(ConfigError) as caught:
        parse('[registry]\nhost = "ghcr.io\n', file="conf/services.toml")
    # tomllib's own wording may change between Python versions; the file and the position may not.
    assert re.fullmatch(r"conf/services\.toml: is not valid TOML: .+ \(at line 2, column 16\)", str(caught.value))


def test_load_names_a_missing_file_and_the_flag(tmp_path: Path) -> None:
    """A missing services.toml says which path and to pass --config."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: file not found; pass --config with the path to services.toml"


def test_load_refuses_a_directory_and_bad_encoding(tmp_path: Path) -> None:
    """A directory or a file that is not UTF-8 is a ConfigError, not a crash."""
    with pytest.raises(ConfigError, match=r": cannot be read: "):
        load(tmp_path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[registry]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: cannot be read: 'utf-8' codec can't decode"):
        load(latin)


def test_unknown_service_lookup_lists_the_valid_ones() -> None:
    """Config.service on a typo names the valid services."""
    config = parse(to_toml(base_config()))
    with pytest.raises(ConfigError) as caught:
        config.service("ap")
    assert str(caught.value) == "services.toml: unknown service 'ap'; valid services: api, web"


def test_defaults_and_normalisation() -> None:
    """Omitted keys get their documented defaults; base URLs lose a trailing slash, health URLs keep theirs."""
    data = base_config()
    data["dokploy"]["url"] = "http://127.0.0.1:3000/"
    health(data)["url"] = "http://127.0.0.1:8001/"
    config = parse(to_toml(data))
    web = config.services["web"]
    assert (web.dockerfile, web.target, web.platforms, web.image_variable) == (
        "Dockerfile.production",
        "",
        ("linux/amd64",),
        "WEB_IMAGE",
    )
    assert config.dokploy_url == "http://127.0.0.1:3000"
    check = config.groups[0].targets["staging"].health[0]
    assert (check.url, check.expect_status, check.timeout_s) == ("http://127.0.0.1:8001/", 200, 120.0)
    assert config.image("api") == "127.0.0.1:5000/acme/shop-api"


def test_every_wrong_type_anywhere_is_a_config_error() -> None:
    """Swapping any value in the config for any other TOML type gives a ConfigError or a valid config, never a crash."""
    replacements: list[object] = [7, 1.5, True, "x", [], ["x"], [{}], {}, {"x": 1}, datetime.date(2024, 1, 1)]
    checked = 0
    for path in _leaf_paths(base_config()):
        for replacement in replacements:
            data = base_config()
            _set(data, path, replacement)
            try:
                parse(to_toml(data))
            except ConfigError as error:
                message = str(error)
            else:
                message = "services.toml: valid"
            assert message.startswith("services.toml: ")
            assert "\n" not in message
            checked += 1
    assert checked > 300


def _leaf_paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path into ``node``, tables and arrays included, as tuples of keys and indices."""
    paths: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _leaf_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += _leaf_paths(value, (*prefix, index))
    return paths


def _set(data: Any, path: tuple[object, ...], value: object) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


# -- the real services.toml ------------------------------------------------

SERVICES = [
    "brain-gateway",
    "bizoholic-frontend",
    "coreldove-frontend",
    "client-portal",
    "admin-dashboard",
    "business-directory",
    "thrillring-gaming",
]


def test_real_config_has_the_seven_services_and_their_images() -> None:
    """The repository's services.toml names the 7 services, each at ghcr.io/bizoholic-digital/bizosaas-<service>."""
    config = load(REAL_CONFIG)
    assert list(config.services) == SERVICES
    assert [config.image(s) for s in SERVICES] == [f"ghcr.io/bizoholic-digital/bizosaas-{s}" for s in SERVICES]


def test_real_config_deploys_backend_then_frontend_to_the_two_composes() -> None:
    """Staging deploys the backend compose before the frontend compose, with the seed's ids."""
    config = load(REAL_CONFIG)
    targets = [(g.name, g.services, g.target("staging")) for g in config.groups]
    assert [(name, t.kind, t.id) for name, _, t in targets if t] == [
        ("backend", "compose", "uimFISkhg1KACigb2CaGz"),
        ("frontend", "compose", "hU2yhYOqv3_ftKGGvcAiv"),
    ]
    assert targets[0][1] == ("brain-gateway",)
    assert set(targets[1][1]) == set(SERVICES) - {"brain-gateway"}
    assert {e.branch: e.name for e in config.environments.values()} == {"staging": "staging", "main": "production"}


def test_real_config_holds_no_secret_looking_value() -> None:
    """No string anywhere in the real services.toml trips the secret detector."""
    data = tomllib.loads(REAL_CONFIG.read_text(encoding="utf-8"))
    strings = _strings(data)
    assert len(strings) > 40
    assert [s for s in strings if config_module._looks_secret(s)] == []


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


# -- check_source: the config against a source tree -----------------------


def test_check_source_accepts_a_matching_tree(tmp_path: Path) -> None:
    """Contexts, Dockerfiles and stages that exist pass."""
    write_sources(tmp_path)
    check_source(parse(to_toml(base_config())), tmp_path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda root: shutil.rmtree(root / "apps/web"),
            "services.toml: services.web.context: directory 'apps/web' does not exist under the source "
            "'{root}'; fix the path or pass --source with the repository root",
            id="missing-context",
        ),
        pytest.param(
            lambda root: (root / "apps/web/Dockerfile.production").unlink(),
            "services.toml: services.web.dockerfile: 'apps/web/Dockerfile.production' does not exist under the "
            "source '{root}'",
            id="missing-dockerfile",
        ),
        pytest.param(
            lambda root: (root / "services/api/Dockerfile").write_text(dockerfile_text(["test", "release"])),
            "services.toml: services.api.target: stage 'runtime' is not in services/api/Dockerfile "
            "(stages: base, release, test)",
            id="unknown-target-stage",
        ),
        pytest.param(
            lambda root: (root / "services/api/Dockerfile").write_text(dockerfile_text(["runtime"])),
            "services.toml: services.api.test.stage: stage 'test' is not in services/api/Dockerfile "
            "(stages: base, runtime)",
            id="unknown-test-stage",
        ),
        pytest.param(
            lambda root: (root / "services/api/Dockerfile").write_text("FROM python:3.12\n"),
            "services.toml: services.api.target: stage 'runtime' is not in services/api/Dockerfile "
            "(stages: none named)",
            id="no-named-stages",
        ),
    ],
)
def test_check_source_names_what_is_missing(tmp_path: Path, damage: Callable[[Path], object], expected: str) -> None:
    """A missing context, Dockerfile or stage is one ConfigError naming the key and the path."""
    write_sources(tmp_path)
    damage(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_source(parse(to_toml(base_config())), tmp_path)
    assert str(caught.value) == expected.format(root=tmp_path)


def test_check_source_only_checks_the_selected_services(tmp_path: Path) -> None:
    """A broken service outside the selection does not fail the check."""
    write_sources(tmp_path)
    (tmp_path / "apps/web/Dockerfile.production").unlink()
    config = parse(to_toml(base_config()))
    check_source(config, tmp_path, ["api"])
    with pytest.raises(ConfigError, match=r"services\.web\.dockerfile"):
        check_source(config, tmp_path, ["api", "web"])


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        pytest.param("FROM a AS one\nFROM one AS two\n", ["one", "two"], id="plain"),
        pytest.param("from a as lower\n", ["lower"], id="lower-case-keywords"),
        pytest.param("FROM --platform=$BUILDPLATFORM node:20 AS deps\n", ["deps"], id="with-flag"),
        pytest.param("  FROM a AS indented\nRUN echo FROM x AS no\n", ["indented"], id="only-from-lines"),
        pytest.param("FROM a\nFROM b\n", [], id="unnamed"),
    ],
)
def test_dockerfile_stages(text: str, stages: list[str]) -> None:
    """Stage names come from FROM ... AS lines only."""
    assert dockerfile_stages(text) == stages


def test_check_source_matches_stage_names_case_insensitively(tmp_path: Path) -> None:
    """Docker lower-cases stage names, so 'AS Runtime' satisfies target 'runtime'."""
    write_sources(tmp_path)
    (tmp_path / "services/api/Dockerfile").write_text("FROM a AS Runtime\nFROM a AS TEST\n")
    check_source(parse(to_toml(base_config())), tmp_path)


# -- a broken services.toml through the command line -----------------------

BROKEN_TEXTS = ["", "not toml at all", "[registry", "registry = 1", "[[services]]\nname = 'x'\n", "a = 1\x00"]


def _broken_variants() -> list[str]:
    """Raw broken texts, then every exact-message case above as a file."""
    texts = list(BROKEN_TEXTS)
    for case in EXACT:
        data = base_config()
        case.values[0](data)  # type: ignore[operator]
        texts.append(to_toml(data))
    return texts


def _plan_argv(path: Path) -> list[str]:
    return ["plan", "--config", str(path), "--branch", "staging", "--sha", SHA]


def test_every_broken_config_is_one_error_line_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI's main, each broken variant exits 2 with exactly one 'error: <file>: ...' line."""
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    variants = _broken_variants()
    for i, text in enumerate(variants):
        path = tmp_path / f"variant{i}.toml"
        path.write_text(text, encoding="utf-8")
        code = cli.main(_plan_argv(path))
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), text
        assert re.fullmatch(rf"error: {re.escape(str(path))}: [^\n]+\n", err), err
    assert len(variants) > 80


def test_a_broken_config_never_gives_a_traceback_from_python_m_pipeline(tmp_path: Path) -> None:
    """The real entry point on broken configs (bad TOML, a typo, a crashing template, a token) exits 2, one line, no
    traceback, and does not print the token.

    Every variant goes through the same ``main`` in-process above; importing the package costs over a second per
    process, so only these representatives pay for a subprocess.
    """
    chosen = {"unknown-service-key", "tag-bad-conversion"}
    texts = ["not toml at all"]
    for case in EXACT:
        if case.id in chosen:
            data = base_config()
            case.values[0](data)  # type: ignore[operator]
            texts.append(to_toml(data))
    leaky = base_config()
    api(leaky)["build_args"]["TOKEN"] = GITHUB_TOKEN
    texts.append(to_toml(leaky))
    assert len(texts) == 4
    procs = []
    for i, text in enumerate(texts):
        path = tmp_path / f"variant{i}.toml"
        path.write_text(text, encoding="utf-8")
        argv = [PYTHON, "-m", "pipeline", *_plan_argv(path)]
        procs.append(
            subprocess.Popen(argv, cwd=tmp_path, env=git_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    for text, proc in zip(texts, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        stderr = err.decode()
        assert (proc.returncode, out, stderr.count("\n")) == (2, b"", 1), (text, stderr)
        assert re.match(rf"error: {re.escape(str(tmp_path))}/variant\d\.toml: ", stderr)
        assert "Traceback" not in stderr
        assert GITHUB_TOKEN not in stderr


def test_services_may_share_a_secret_id_from_one_source() -> None:
    """One npm token for every frontend is fine: the id and its source agree."""
    data = base_config()
    for name in ("api", "web"):
        data["services"][name]["secrets"] = {"npm": "env://NPM_TOKEN"}
    config = parse(to_toml(data))
    assert config.services["api"].secrets == config.services["web"].secrets == {"npm": "env://NPM_TOKEN"}


def test_messages_name_paths_of_the_repository_inside_a_module_calls_copy() -> None:
    """In module mode the files are read from a temporary copy of the upload: messages hide that path."""
    copy = Path(tempfile.mkdtemp(prefix=UPLOAD_COPY_PREFIX))
    try:
        (copy / "ci").mkdir()
        (copy / "ci" / "services.toml").write_text("[services\n")
        with pytest.raises(ConfigError) as caught:
            load(copy / "ci" / "services.toml")
        assert str(caught.value).startswith("ci/services.toml: is not valid TOML")

        (copy / "ci" / "services.toml").write_text(to_toml(base_config()))
        with pytest.raises(ConfigError) as caught:
            check_source(load(copy / "ci" / "services.toml"), copy)
        assert "does not exist under the uploaded source;" in str(caught.value)
        assert str(copy) not in str(caught.value)
    finally:
        shutil.rmtree(copy)
