"""services.toml: the one description of what is built and where it goes.

The file is parsed with ``tomllib`` into frozen dataclasses. Validation is strict,
because a silent typo in a deploy tool is worse than a loud one: unknown keys,
wrong types, dangling references and values that look like pasted secrets are
all refused, each with one message that names the file, the key path, what was
expected and how to fix it. ``check_source`` then checks the config against a
source tree (contexts and Dockerfiles exist) before anything is built.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.tags import (
    REPOSITORY_COMPONENT,
    check_template,
)

TargetKind = Literal["compose", "application"]

DEFAULT_HEALTH_TIMEOUT_S = 120.0
DEFAULT_TEST_TIMEOUT_S = 900.0
DEFAULT_SMOKE_TIMEOUT_S = 60.0
SECRET_SCHEMES = ("env://", "file://", "cmd://", "op://", "vault://", "libsecret://", "gcp://", "aws+sm://")

_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SERVICE_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_DOCKERFILE_STAGE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)", re.IGNORECASE | re.MULTILINE)

# Shapes of credentials people paste into config files by mistake. Long
# random-looking strings are caught too, since most API keys are just that.
_SECRET_SHAPES = (
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"hooks\.slack\.com/services/"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
)
_RANDOM_LOOKING = re.compile(r"^[A-Za-z0-9_\-+/=]{32,}$")
_TOKEN_RUN = 16  # a random token of 32+ characters has a run this long between separators
_NO_SECRETS_HERE = (
    "services.toml is committed, so keys and tokens never go in it. "
    "Pass them as Dagger secrets (--registry-token=env://GITHUB_TOKEN) or name an "
    "environment variable (env://NAME) instead"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """An HTTP check that must pass after a group deploys."""

    url: str
    expect_status: int = 200
    contains: str = ""
    timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    name: str = ""

    def label(self) -> str:
        """A short name for tables: the given name, else the URL."""
        return self.name or self.url


@dataclass(frozen=True, slots=True, kw_only=True)
class DokployTarget:
    """Where a group deploys in one environment: a Dokploy compose or application."""

    kind: TargetKind
    id: str
    compose_file: str = ""
    health: tuple[HealthCheck, ...] = ()

    def describe(self) -> str:
        """``compose uimFISkhg1KACigb2CaGz``, for messages."""
        return f"{self.kind} {self.id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """Services deployed together, in the order groups appear in services.toml."""

    name: str
    services: tuple[str, ...]
    targets: Mapping[str, DokployTarget] = field(default_factory=dict)

    def target(self, environment: str) -> DokployTarget | None:
        """This group's target in ``environment``, if it has one."""
        return self.targets.get(environment)


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """A deploy environment, chosen by the branch that was pushed."""

    name: str
    branch: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmokeCheck:
    """Boot the built image and probe its health endpoint before publishing."""

    port: int
    path: str = "/"
    expect_status: int = 200
    timeout_s: float = DEFAULT_SMOKE_TIMEOUT_S


@dataclass(frozen=True, slots=True, kw_only=True)
class TestDependency:
    """A service container an integration test needs (a database, a cache)."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    image: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestSpec:
    """How a service's tests run: a Dockerfile stage, a command, or both."""

    __test__ = False  # not a pytest test class, despite the name

    stage: str = ""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[TestDependency, ...] = ()
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S
    reports: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """One image the pipeline builds from a context and a Dockerfile."""

    name: str
    context: str
    dockerfile: str = "Dockerfile"
    target: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)
    platforms: tuple[str, ...] = ("linux/amd64",)
    secrets: Mapping[str, str] = field(default_factory=dict)
    image_variable: str = ""
    smoke: SmokeCheck | None = None
    test: TestSpec | None = None

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile relative to the source root."""
        return str(PurePosixPath(self.context) / self.dockerfile)


@dataclass(frozen=True, slots=True, kw_only=True)
class Registry:
    """Where images go: ``<host>/<namespace>/<image_prefix><service>``."""

    host: str
    namespace: str
    image_prefix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """When to post the run summary to the webhook given as a secret."""

    on: tuple[str, ...] = ("failure",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole of services.toml, validated."""

    file: str
    registry: Registry
    source_url: str
    dokploy_url: str
    environments: Mapping[str, Environment]
    services: Mapping[str, Service]
    groups: tuple[Group, ...]
    notify: Notify = field(default_factory=Notify)

    def repository(self, service: str) -> str:
        """The repository path inside the registry: ``bizoholic-digital/bizosaas-brain-gateway``."""
        return f"{self.registry.namespace}/{self.registry.image_prefix}{service}".lower()

    def image(self, service: str) -> str:
        """The image name without tag: ``ghcr.io/bizoholic-digital/bizosaas-brain-gateway``."""
        return f"{self.registry.host}/{self.repository(service)}".lower()

    def group_of(self, service: str) -> Group:
        """The group a service deploys with (validation guarantees exactly one)."""
        return next(g for g in self.groups if service in g.services)

    def environment_for_branch(self, branch: str) -> Environment | None:
        """The environment deployed from ``branch``, if any."""
        return next((e for e in self.environments.values() if e.branch == branch), None)

    def service(self, name: str) -> Service:
        """A service by name, or an error listing the valid names."""
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                self.file,
                "",
                f"unknown service '{name}'; valid services: {', '.join(self.services)}",
            ) from None


# Module calls copy what they read of the uploaded source into such a directory
# (pipeline.localcopy); messages name paths in it as paths of the repository.
UPLOAD_COPY_PREFIX = "pipeline-source-"


def upload_copy_of(path: Path) -> Path | None:
    """The module call's copy of the upload that ``path`` is in, if any."""
    for candidate in (path, *path.parents):
        if candidate.name.startswith(UPLOAD_COPY_PREFIX) and candidate.parent == Path(tempfile.gettempdir()):
            return candidate
    return None


def shown(path: Path) -> str:
    """``path`` as messages show it: relative to the repository inside a copy of the upload."""
    copy = upload_copy_of(path)
    return str(path) if copy is None else path.relative_to(copy).as_posix()


def source_shown(root: Path) -> str:
    """The source directory as messages name it."""
    return "the uploaded source" if upload_copy_of(root) == root else f"the source {str(root)!r}"


def load(path: str | Path) -> Config:
    """Read and validate a services.toml file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown(path), "", "file not found; pass --config with the path to services.toml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(shown(path), "", f"cannot be read: {e}") from None
    return parse(text, file=shown(path))


def parse(text: str, *, file: str = "services.toml") -> Config:
    """Validate services.toml text; ``file`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"is not valid TOML: {e}") from None
    return _Reader(file).config(data)


class _Reader:
    """Walks the parsed TOML, checking each key where it is read."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key, problem)

    # -- primitive readers -------------------------------------------------

    def table(self, value: object, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)}")
        for name in value:
            if name in allowed:
                continue
            if _looks_secret(name):
                raise self.fail(key, "has a key that looks like a secret; " + _NO_SECRETS_HERE)
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(f"{key}.{name}" if key else name, f"unknown key{hint}; allowed keys: {', '.join(allowed)}")
        return value

    def string(self, value: object, key: str, *, required: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
        if required and not value.strip():
            raise self.fail(key, "must not be empty")
        self.not_a_secret(value, key)
        return value

    def number(self, value: object, key: str, *, minimum: float = 0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number of seconds, got {value}")
        if value <= minimum:
            raise self.fail(key, f"must be greater than {minimum:g}, got {value}")
        return float(value)

    def port(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a port number (1-65535), got {_kind(value)}")
        if not 1 <= value <= 65535:
            raise self.fail(key, f"expected a port number (1-65535), got {value}")
        return value

    def status(self, value: object, key: str) -> int:
        if isinstance(value, str):
            self.not_a_secret(value, key)  # the message below repeats the value
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise self.fail(key, f"expected an HTTP status code (100-599), got {value!r}")
        return value

    def strings(self, value: object, key: str, *, allow_empty: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of strings, got {_kind(value)}")
        if not value and not allow_empty:
            raise self.fail(key, "must not be empty")
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(value))

    def string_map(self, value: object, key: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table of strings, got {_kind(value)}")
        result = {}
        for name, v in value.items():
            if not _ENV_VAR.match(name):
                raise self.fail(f"{key}.{name}", "names must be letters, digits and '_', not starting with a digit")
            result[name] = self.string(v, f"{key}.{name}", required=False)
        return result

    def url(self, value: object, key: str) -> str:
        url = self.string(value, key)
        if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
            # Never echo the URL: user:password@ is a credential.
            raise self.fail(key, "must not carry credentials (user:password@); pass them as Dagger secrets")
        if not re.match(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$", url):
            raise self.fail(key, f"expected an http:// or https:// URL, got {url!r}")
        return url

    def relative_path(self, value: object, key: str) -> str:
        path = self.string(value, key)
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or "\\" in path:
            raise self.fail(key, f"must be a path relative to the source root without '..', got {path!r}")
        return str(pure)

    def not_a_secret(self, value: str, key: str) -> None:
        if _looks_secret(value):
            raise self.fail(key, "looks like a secret; " + _NO_SECRETS_HERE)

    # -- sections ----------------------------------------------------------

    def keys_not_secret(self, value: object, key: str) -> None:
        """Refuse a table key shaped like a credential anywhere, before any message could echo it."""
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for name, child in items:
            if isinstance(name, str) and _looks_secret(name):
                raise self.fail(key, "has a key that looks like a secret; " + _NO_SECRETS_HERE)
            self.keys_not_secret(child, f"{key}[{name}]" if isinstance(name, int) else f"{key}.{name}".lstrip("."))

    def config(self, data: dict[str, Any]) -> Config:
        self.keys_not_secret(data, "")
        data = self.table(data, "", ["registry", "project", "dokploy", "environments", "services", "groups", "notify"])
        for section in ("registry", "environments", "services", "groups"):
            if section not in data:
                raise self.fail(section, "is required; see the README for an example")
        registry = self.registry(data["registry"])
        project = self.table(data.get("project", {}), "project", ["source_url"])
        source_url = ""
        if "source_url" in project:
            source_url = self.url(project["source_url"], "project.source_url").rstrip("/")
        dokploy = self.table(data.get("dokploy", {}), "dokploy", ["url"])
        dokploy_url = self.url(dokploy["url"], "dokploy.url").rstrip("/") if "url" in dokploy else ""
        environments = self.environments(data["environments"])
        services = self.services(data["services"], registry)
        groups = self.groups(data["groups"], services, environments)
        notify = self.notify(data.get("notify", {}))
        return Config(
            file=self.file,
            registry=registry,
            source_url=source_url,
            dokploy_url=dokploy_url,
            environments=environments,
            services=services,
            groups=groups,
            notify=notify,
        )

    def registry(self, value: object) -> Registry:
        t = self.table(value, "registry", ["host", "namespace", "image_prefix"])
        for required in ("host", "namespace"):
            if required not in t:
                raise self.fail(f"registry.{required}", 'is required (for example host = "ghcr.io")')
        host = self.string(t["host"], "registry.host")
        if not re.match(r"^[a-z0-9.-]+(:\d+)?$", host):
            raise self.fail("registry.host", f"expected a lower-case host name like 'ghcr.io', got {host!r}")
        namespace = self.string(t["namespace"], "registry.namespace")
        for part in namespace.split("/"):
            if not re.fullmatch(REPOSITORY_COMPONENT, part):
                raise self.fail(
                    "registry.namespace",
                    f"{namespace!r} is not a valid image path: use lower-case letters, digits, "
                    "and '.', '_', '-' between them (GHCR owners must be lower-cased)",
                )
        prefix = self.string(t.get("image_prefix", ""), "registry.image_prefix", required=False)
        if prefix and not re.fullmatch(REPOSITORY_COMPONENT, prefix + "a"):
            raise self.fail(
                "registry.image_prefix",
                f"{prefix!r} cannot start an image name: use lower-case letters and digits, "
                "ending in '-', '_' or '.' to join the service name (like \"bizosaas-\")",
            )
        return Registry(host=host, namespace=namespace, image_prefix=prefix)

    def environments(self, value: object) -> dict[str, Environment]:
        if not isinstance(value, dict) or not value:
            raise self.fail("environments", "expected at least one [environments.<name>] table")
        result: dict[str, Environment] = {}
        branches: dict[str, str] = {}
        for name, body in value.items():
            key = f"environments.{name}"
            if not _SERVICE_NAME.match(name):
                raise self.fail(key, "environment names are lower-case words joined by '-'")
            t = self.table(body, key, ["branch", "tags"])
            if "branch" not in t:
                raise self.fail(f"{key}.branch", f"is required: the git branch that deploys to {name}")
            branch = self.string(t["branch"], f"{key}.branch")
            if branch in branches:
                raise self.fail(
                    f"{key}.branch", f"branch {branch!r} already deploys to environment '{branches[branch]}'"
                )
            branches[branch] = name
            if "tags" not in t:
                raise self.fail(f"{key}.tags", 'is required: the tag templates, e.g. ["{branch}-{sha}"]')
            tags = self.strings(t["tags"], f"{key}.tags")
            for i, template in enumerate(tags):
                problem = check_template(template, environment=name)
                if problem:
                    raise self.fail(f"{key}.tags[{i}]", problem)
            if not any("{sha}" in t for t in tags):
                raise self.fail(
                    f"{key}.tags",
                    'needs at least one immutable tag containing {sha} (deploys pin it); add "{branch}-{sha}"',
                )
            result[name] = Environment(name=name, branch=branch, tags=tags)
        return result

    def services(self, value: object, registry: Registry) -> dict[str, Service]:
        if not isinstance(value, dict) or not value:
            raise self.fail("services", "expected at least one [services.<name>] table")
        result: dict[str, Service] = {}
        variables: dict[str, str] = {}
        secret_sources: dict[str, tuple[str, str]] = {}
        for name, body in value.items():
            service = self.service(name, body, registry)
            if service.image_variable in variables:
                raise self.fail(
                    f"services.{name}.image_variable",
                    f"{service.image_variable!r} is already used by service '{variables[service.image_variable]}'",
                )
            variables[service.image_variable] = name
            for secret_id, uri in service.secrets.items():
                # The engine keys a named secret by its name alone: two builds running at
                # once with one id from two sources would both mount whichever came last.
                first, first_uri = secret_sources.setdefault(secret_id, (name, uri))
                if first_uri != uri:
                    raise self.fail(
                        f"services.{name}.secrets.{secret_id}",
                        f"comes from {uri}, but service '{first}' takes '{secret_id}' from {first_uri}; "
                        f"one secret id has one source: rename it in one Dockerfile (--mount=type=secret,id=...)",
                    )
            result[name] = service
        return result

    def service(self, name: str, body: object, registry: Registry) -> Service:
        key = f"services.{name}"
        if not _SERVICE_NAME.match(name):
            raise self.fail(key, "service names are lower-case letters and digits joined by '-' (they name the image)")
        image = f"{registry.image_prefix}{name}"
        if not re.fullmatch(REPOSITORY_COMPONENT, image):
            raise self.fail(key, f"image name {image!r} breaks the OCI reference grammar")
        t = self.table(
            body,
            key,
            [
                "context",
                "dockerfile",
                "target",
                "build_args",
                "platforms",
                "secrets",
                "image_variable",
                "smoke",
                "test",
            ],
        )
        if "context" not in t:
            raise self.fail(f"{key}.context", "is required: the build context, relative to the source root")
        platforms = self.strings(t.get("platforms", ["linux/amd64"]), f"{key}.platforms")
        for i, platform in enumerate(platforms):
            if not _PLATFORM.match(platform):
                raise self.fail(f"{key}.platforms[{i}]", f"expected a platform like 'linux/amd64', got {platform!r}")
        if len(set(platforms)) != len(platforms):
            raise self.fail(f"{key}.platforms", "lists a platform twice")
        raw_secrets = t.get("secrets", {})
        if not isinstance(raw_secrets, dict):
            raise self.fail(f"{key}.secrets", f"expected a table of secret id = source URI, got {_kind(raw_secrets)}")
        secrets = {}
        for secret_id, raw_uri in raw_secrets.items():
            if not _SECRET_ID.match(secret_id):
                raise self.fail(f"{key}.secrets.{secret_id}", "secret ids are letters, digits, '.', '_' and '-'")
            uri = self.string(raw_uri, f"{key}.secrets.{secret_id}")
            if not uri.startswith(SECRET_SCHEMES):
                raise self.fail(
                    f"{key}.secrets.{secret_id}",
                    f'expected where the secret comes from, like "env://NPM_TOKEN", got {uri!r}',
                )
            secrets[secret_id] = uri
        variable = self.string(
            t.get("image_variable", name.upper().replace("-", "_") + "_IMAGE"), f"{key}.image_variable"
        )
        if not _ENV_VAR.match(variable):
            raise self.fail(f"{key}.image_variable", f"{variable!r} is not a valid environment variable name")
        return Service(
            name=name,
            context=self.relative_path(t["context"], f"{key}.context"),
            dockerfile=self.relative_path(t.get("dockerfile", "Dockerfile"), f"{key}.dockerfile"),
            target=self.string(t.get("target", ""), f"{key}.target", required=False),
            build_args=self.string_map(t.get("build_args", {}), f"{key}.build_args"),
            platforms=platforms,
            secrets=secrets,
            image_variable=variable,
            smoke=self.smoke(t["smoke"], f"{key}.smoke") if "smoke" in t else None,
            test=self.test(t["test"], f"{key}.test") if "test" in t else None,
        )

    def smoke(self, value: object, key: str) -> SmokeCheck:
        t = self.table(value, key, ["port", "path", "expect_status", "timeout"])
        if "port" not in t:
            raise self.fail(f"{key}.port", "is required: the port the service listens on inside the image")
        path = self.string(t.get("path", "/"), f"{key}.path")
        if not path.startswith("/"):
            raise self.fail(f"{key}.path", f"should start with '/', got {path!r}")
        return SmokeCheck(
            port=self.port(t["port"], f"{key}.port"),
            path=path,
            expect_status=self.status(t.get("expect_status", 200), f"{key}.expect_status"),
            timeout_s=self.number(t.get("timeout", DEFAULT_SMOKE_TIMEOUT_S), f"{key}.timeout"),
        )

    def test(self, value: object, key: str) -> TestSpec:
        t = self.table(value, key, ["stage", "command", "env", "services", "timeout", "reports"])
        stage = self.string(t.get("stage", ""), f"{key}.stage", required=False)
        command = self.strings(t["command"], f"{key}.command") if "command" in t else ()
        if not stage and not command:
            raise self.fail(key, "needs a 'stage' (a Dockerfile stage that runs the tests) or a 'command'")
        reports = self.string(t.get("reports", ""), f"{key}.reports", required=False)
        if reports and not reports.startswith("/"):
            raise self.fail(f"{key}.reports", f"should be an absolute path inside the container, got {reports!r}")
        deps = t.get("services", [])
        if not isinstance(deps, list):
            raise self.fail(f"{key}.services", f"expected a list of [[{key}.services]] tables")
        dependencies = []
        for i, dep in enumerate(deps):
            dkey = f"{key}.services[{i}]"
            d = self.table(dep, dkey, ["name", "image", "port", "env"])
            for required in ("name", "image", "port"):
                if required not in d:
                    raise self.fail(f"{dkey}.{required}", "is required for a test service container")
            dependencies.append(
                TestDependency(
                    name=self.string(d["name"], f"{dkey}.name"),
                    image=self.string(d["image"], f"{dkey}.image"),
                    port=self.port(d["port"], f"{dkey}.port"),
                    env=self.string_map(d.get("env", {}), f"{dkey}.env"),
                )
            )
        return TestSpec(
            stage=stage,
            command=command,
            env=self.string_map(t.get("env", {}), f"{key}.env"),
            services=tuple(dependencies),
            timeout_s=self.number(t.get("timeout", DEFAULT_TEST_TIMEOUT_S), f"{key}.timeout"),
            reports=reports,
        )

    def groups(
        self, value: object, services: Mapping[str, Service], environments: Mapping[str, Environment]
    ) -> tuple[Group, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("groups", "expected at least one [[groups]] table, in deploy order")
        owner: dict[str, str] = {}
        names: set[str] = set()
        result = []
        for i, body in enumerate(value):
            key = f"groups[{i}]"
            t = self.table(body, key, ["name", "services", "targets"])
            if "name" not in t:
                raise self.fail(f"{key}.name", "is required")
            name = self.string(t["name"], f"{key}.name")
            key = f"groups[{i}] ({name})"
            if name in names:
                raise self.fail(f"{key}.name", f"group '{name}' is defined twice")
            names.add(name)
            if "services" not in t:
                raise self.fail(f"{key}.services", "is required: the services this group deploys")
            members = self.strings(t["services"], f"{key}.services", allow_empty=True)
            for j, member in enumerate(members):
                if member not in services:
                    raise self.fail(
                        f"{key}.services[{j}]",
                        f"unknown service '{member}'; defined services: {', '.join(services)}",
                    )
                if member in owner:
                    raise self.fail(
                        f"{key}.services[{j}]",
                        f"service '{member}' is already in group '{owner[member]}'; a service deploys with one group",
                    )
                owner[member] = name
            targets = {}
            raw_targets = t.get("targets", {})
            if not isinstance(raw_targets, dict):
                raise self.fail(f"{key}.targets", "expected a table of [groups.targets.<environment>]")
            for env_name, target in raw_targets.items():
                if env_name not in environments:
                    raise self.fail(
                        f"{key}.targets.{env_name}",
                        f"unknown environment '{env_name}'; defined environments: {', '.join(environments)}",
                    )
                targets[env_name] = self.target(target, f"{key}.targets.{env_name}")
            result.append(Group(name=name, services=members, targets=targets))
        missing = [s for s in services if s not in owner]
        if missing:
            raise self.fail(
                "groups",
                f"service{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                "in no group; add each to the services list of the group it deploys with",
            )
        return tuple(result)

    def target(self, value: object, key: str) -> DokployTarget:
        t = self.table(value, key, ["compose_id", "application_id", "compose_file", "health"])
        if ("compose_id" in t) == ("application_id" in t):
            raise self.fail(key, "needs exactly one of compose_id or application_id (from the Dokploy UI)")
        kind: TargetKind = "compose" if "compose_id" in t else "application"
        target_id = self.string(t[f"{kind}_id"], f"{key}.{kind}_id")
        compose_file = self.relative_path(t["compose_file"], f"{key}.compose_file") if "compose_file" in t else ""
        if compose_file and kind != "compose":
            raise self.fail(f"{key}.compose_file", "only applies to compose targets")
        checks = t.get("health", [])
        if not isinstance(checks, list):
            raise self.fail(f"{key}.health", f"expected a list of [[{key}.health]] tables")
        health = tuple(self.health(c, f"{key}.health[{i}]") for i, c in enumerate(checks))
        return DokployTarget(kind=kind, id=target_id, compose_file=compose_file, health=health)

    def health(self, value: object, key: str) -> HealthCheck:
        t = self.table(value, key, ["name", "url", "expect_status", "contains", "timeout"])
        if "url" not in t:
            raise self.fail(f"{key}.url", "is required")
        return HealthCheck(
            name=self.string(t.get("name", ""), f"{key}.name", required=False),
            url=self.url(t["url"], f"{key}.url"),
            expect_status=self.status(t.get("expect_status", 200), f"{key}.expect_status"),
            contains=self.string(t.get("contains", ""), f"{key}.contains", required=False),
            timeout_s=self.number(t.get("timeout", DEFAULT_HEALTH_TIMEOUT_S), f"{key}.timeout"),
        )

    def notify(self, value: object) -> Notify:
        t = self.table(value, "notify", ["on"])
        on = self.strings(t.get("on", ["failure"]), "notify.on")
        for i, event in enumerate(on):
            if event not in ("success", "failure"):
                raise self.fail(f"notify.on[{i}]", f"expected 'success' or 'failure', got {event!r}")
        return Notify(on=on)


def check_source(config: Config, root: Path, services: Sequence[str] | None = None) -> None:
    """Check that each service's context, Dockerfile and stages exist under ``root``."""
    for name in services if services is not None else list(config.services):
        service = config.service(name)
        key = f"services.{name}"
        context = root / service.context
        if not context.is_dir():
            raise ConfigError(
                config.file,
                f"{key}.context",
                f"directory {service.context!r} does not exist under {source_shown(root)}; "
                "fix the path or pass --source with the repository root",
            )
        dockerfile = root / service.dockerfile_path
        if not dockerfile.is_file():
            raise ConfigError(
                config.file,
                f"{key}.dockerfile",
                f"{service.dockerfile_path!r} does not exist under {source_shown(root)}",
            )
        # Docker compares stage names case-insensitively, as it lower-cases them.
        stages = {s.lower() for s in dockerfile_stages(dockerfile.read_text(encoding="utf-8", errors="replace"))}
        wanted = [("target", service.target)]
        if service.test is not None:
            wanted.append(("test.stage", service.test.stage))
        for what, stage in wanted:
            if stage and stage.lower() not in stages:
                raise ConfigError(
                    config.file,
                    f"{key}.{what}",
                    f"stage {stage!r} is not in {service.dockerfile_path} "
                    f"(stages: {', '.join(sorted(stages)) or 'none named'})",
                )


def dockerfile_stages(text: str) -> list[str]:
    """The stage names a Dockerfile declares with ``FROM ... AS name``."""
    return [m.group(1) for m in _DOCKERFILE_STAGE.finditer(text)]


def _looks_secret(value: str) -> bool:
    """A known credential shape, or a long random-looking token."""
    return any(shape.search(value) for shape in _SECRET_SHAPES) or _looks_random(value)


def _looks_random(value: str) -> bool:
    """A long token mixing letters and digits, as API keys are; paths and words are not."""
    if not _RANDOM_LOOKING.match(value) or "/" in value.strip("/"):
        return False
    # Names joined by '-', '_' or '.' (bizosaas-marketplace-frontend-v2, its ..._V2_IMAGE) are words:
    # a token has a long run without separators.
    if max(len(run) for run in re.split(r"[-_.]", value)) < _TOKEN_RUN:
        return False
    has_lower = any(c.islower() for c in value)
    has_upper = any(c.isupper() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return has_digit and (has_lower + has_upper) >= 1 and len(set(value)) >= 16


def _kind(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return names.get(type(value), type(value).__name__)
