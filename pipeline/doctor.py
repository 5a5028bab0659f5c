"""The pre-flight check: everything a deploy needs, checked at once, nothing changed.

This replaces ``verify-cicd-setup.sh``. Every check runs even when others fail, so
one run lists every problem, each with the fix a person can act on:

- services.toml is valid, and each service's context and Dockerfile exist;
- the registry token may push to each image (an upload is started and cancelled,
  which stores nothing);
- Dokploy answers at its URL, the API key is accepted, and each compose or
  application id of the environment exists (reads only: GETs);
- each compose file names our images through the pinned variable, or sets
  ``pull_policy: always`` for a moving tag, and each variable is in the compose's env;
- every health URL is well-formed.

A check that cannot run (no key, Dokploy unreachable) is skipped with the reason,
so the report never claims a pass it did not see.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from pipeline import composefile, envfile
from pipeline import config as config_module
from pipeline.config import Config, DokployTarget, Group
from pipeline.dokploy import Application, Compose, DokployClient
from pipeline.errors import (
    ConfigError,
    DokployAuthError,
    DokployError,
    DokployNotFoundError,
    DokployPermissionError,
    DokployUnavailableError,
    PipelineError,
    RegistryAuthError,
    RegistryPermissionError,
)
from pipeline.registry import RegistryClient

T = TypeVar("T")

# Dokploy answers a request without a key with exactly this, on every route; the
# plain GET below therefore proves "this is Dokploy and it answers" without a key.
_UNAUTHORIZED = {"message": "Unauthorized"}
_PING_PROCEDURE = "compose.one"
_PING_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_KEY_FLAG = "--dokploy-key=env://DOKPLOY_API_KEY"
_REGISTRY_FLAG = "--registry-token=env://GITHUB_TOKEN"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One row of the report: ``ok`` is True, False, or None when skipped (``detail`` says why)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DoctorReport:
    """Every check of one doctor run, in a stable order."""

    environment: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """False when any check failed (skipped ones do not fail the run)."""
        return not self.failures

    @property
    def failures(self) -> tuple[Check, ...]:
        """The failed checks."""
        return tuple(c for c in self.checks if c.ok is False)


def _passed(name: str, detail: str) -> Check:
    return Check(name=name, ok=True, detail=detail)


def _failed(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, ok=False, detail=detail, fix=fix)


def _skipped(name: str, why: str) -> Check:
    return Check(name=name, ok=None, detail=why)


async def run_doctor(
    config_path: str | Path,
    *,
    source: Path,
    environment: str = "",
    registry: RegistryClient | None,
    dokploy: DokployClient | None,
    http: httpx.AsyncClient,
    dokploy_url: str = "",
) -> DoctorReport:
    """Run every check against ``source`` and the given clients (None: that credential was not given)."""
    try:
        config = config_module.load(config_path)
    except ConfigError as e:
        fix = (
            "edit services.toml at the key named; `python -m pipeline plan --offline` re-checks it"
            if await anyio.Path(config_path).exists()
            else f"pass --config (or --source) pointing at services.toml: "
            f"{config_module.shown(Path(config_path))} does not exist"
        )
        rows = [_failed("services.toml", str(e), fix), _skipped("everything else", "services.toml did not load")]
        return DoctorReport(environment=environment, checks=tuple(rows))
    head = [_passed("services.toml", _config_summary(config))]
    if environment and environment not in config.environments:
        head.append(
            _failed(
                "environment",
                f"environment '{environment}' is not in {config.file}, so no Dokploy target was checked",
                f"pass --environment with one of: {', '.join(config.environments)} (or none for all)",
            )
        )
        targets = []
    else:
        targets = _targets(config, environment)
    sections = await _concurrently(
        [
            partial(_source_checks, config, source),
            partial(_push_checks, config, registry),
            partial(_dokploy_checks, config, targets, source, dokploy, http, dokploy_url or config.dokploy_url),
            partial(_health_url_checks, targets),
        ]
    )
    return DoctorReport(environment=environment, checks=tuple(head + [c for s in sections for c in s]))


def render(report: DoctorReport) -> str:
    """A table of every check, with the fix under each failure and a count at the end."""
    marks = {True: "ok", False: "FAIL", None: "skip"}
    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"doctor: {_scope(report.environment)}", ""]
    for check in report.checks:
        first, *rest = check.detail.splitlines() or [""]
        lines.append(f"{marks[check.ok]:<4}  {check.name:<{width}}  {first}".rstrip())
        lines += [f"{'':<4}  {'':<{width}}  {line}".rstrip() for line in rest]
        if check.ok is False and check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    counts = {mark: sum(1 for c in report.checks if c.ok is value) for value, mark in marks.items()}
    verdict = "all checks passed" if report.ok else f"{counts['FAIL']} failed"
    lines += ["", f"{verdict} ({counts['ok']} ok, {counts['FAIL']} failed, {counts['skip']} skipped)"]
    return "\n".join(lines) + "\n"


# ---- local ---------------------------------------------------------------------------


def _config_summary(config: Config) -> str:
    return (
        f"{config.file} is valid: {len(config.services)} services in {len(config.groups)} groups, "
        f"environments {', '.join(config.environments)}"
    )


def _scope(environment: str) -> str:
    return f"environment {environment}" if environment else "all environments"


def _targets(config: Config, environment: str) -> list[tuple[str, Group, DokployTarget]]:
    """(environment, group, target) for the chosen environment, or all, in config order."""
    names = [environment] if environment else list(config.environments)
    return [(env, group, group.targets[env]) for env in names for group in config.groups if env in group.targets]


async def _source_checks(config: Config, source: Path) -> list[Check]:
    rows = []
    for name, service in config.services.items():
        label = f"source {name}"
        try:
            config_module.check_source(config, source, [name])
        except ConfigError as e:
            fix = "fix context/dockerfile in services.toml, or pass --source with the repository root"
            rows.append(_failed(label, e.problem, fix))
            continue
        rows.append(_passed(label, f"{service.context}/ and {service.dockerfile_path} present"))
    return rows


def health_url_problem(url: str) -> str:
    """Why ``url`` cannot be probed, or "" when it is a well-formed http(s) URL."""
    if any(c.isspace() for c in url):
        return "contains whitespace"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "is not http:// or https://"
    try:
        port = parts.port
    except ValueError:
        return "has a port outside 1-65535"
    if port == 0:
        return "has port 0"
    host = parts.hostname or ""
    if not host:
        return "has no host"
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"has an invalid IPv4 address {host!r}"
        return ""
    if not all(_HOST_LABEL.match(label) for label in host.rstrip(".").split(".")):
        return f"has an invalid host name {host!r}"
    return ""


async def _health_url_checks(targets: Sequence[tuple[str, Group, DokployTarget]]) -> list[Check]:
    rows = []
    for env, group, target in targets:
        label = f"{env}/{group.name} health urls"
        if not target.health:
            rows.append(_skipped(label, "no health checks configured"))
            continue
        bad = [f"{c.url!r} {problem}" for c in target.health if (problem := health_url_problem(c.url))]
        if bad:
            fix = f"correct [[groups.targets.{env}.health]] url of group '{group.name}' in services.toml"
            rows.append(_failed(label, "; ".join(bad), fix))
        else:
            rows.append(_passed(label, f"{len(target.health)} well-formed"))
    return rows


# ---- registry ------------------------------------------------------------------------


async def _push_checks(config: Config, registry: RegistryClient | None) -> list[Check]:
    if registry is None:
        return [
            _failed(
                "registry push",
                f"no registry token given, so push access to {config.registry.host} cannot be checked",
                f"pass {_REGISTRY_FLAG} (a token with write:packages) and --registry-user",
            )
        ]
    return await _concurrently([partial(_push_check, config, registry, name) for name in config.services])


async def _push_check(config: Config, registry: RegistryClient, service: str) -> Check:
    label = f"push {service}"
    repository = config.repository(service)
    try:
        await registry.check_push_access(repository)
    except RegistryPermissionError as e:
        fix = (
            "give the token write:packages; on GHCR also grant this repository write access under "
            "the package's settings -> Manage Actions access"
        )
        return _failed(label, str(e), fix)
    except RegistryAuthError as e:
        return _failed(label, str(e), f"pass a valid token with {_REGISTRY_FLAG} and the user it belongs to")
    except PipelineError as e:
        return _failed(label, str(e), f"check [registry] in services.toml and that {registry.registry} is reachable")
    return _passed(label, f"may push to {registry.registry}/{repository}")


# ---- dokploy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lookup:
    """What Dokploy said about one target: the row, or the error."""

    compose: Compose | None = None
    application: Application | None = None
    error: DokployError | None = None


async def _dokploy_checks(
    config: Config,
    targets: Sequence[tuple[str, Group, DokployTarget]],
    source: Path,
    client: DokployClient | None,
    http: httpx.AsyncClient,
    url: str,
) -> list[Check]:
    base = client.base_url if client is not None else url.rstrip("/").removesuffix("/api")
    if not base:
        reach = _failed("dokploy url", "no Dokploy URL", f"set [dokploy] url in {config.file} or pass --dokploy-url")
    else:
        reach = await _ping(http, base)
    rows = [reach]
    lookups: list[_Lookup | None] = [None] * len(targets)
    if client is None:
        rows.append(
            _failed("dokploy key", "no Dokploy API key given", f"pass {_KEY_FLAG} (an API key from Dokploy's settings)")
        )
        why = "needs the Dokploy API key"
    elif reach.ok is not True:
        rows.append(_skipped("dokploy key", "the Dokploy URL check failed"))
        why = "the Dokploy URL check failed"
    else:
        found = await _concurrently([partial(_lookup, client, t) for _, _, t in targets])
        lookups = list(found)
        rows.append(_key_check(client, found))
        why = "the API key was refused"
    for (env, group, target), lookup in zip(targets, lookups, strict=True):
        name = f"{env}/{group.name}"
        if lookup is None or isinstance(lookup.error, DokployAuthError):
            rows.append(_skipped(f"{name} {target.kind}", why))
        else:
            rows.append(_target_check(name, target, lookup))
        if target.kind == "compose":
            rows += _compose_file_checks(config, env, group, target, source, lookup)
            rows.append(_env_check(config, name, group, lookup, why))
    return rows


async def _ping(http: httpx.AsyncClient, base: str) -> Check:
    """GET a procedure without a key: Dokploy answers 401 Unauthorized, which proves it is there."""
    url = f"{base}/api/{_PING_PROCEDURE}"
    fix = "check dokploy.url (or --dokploy-url) and that Dokploy is running and reachable from here"
    try:
        response = await http.get(url, timeout=_PING_TIMEOUT, follow_redirects=False)
    except (httpx.RequestError, httpx.InvalidURL) as e:
        return _failed("dokploy url", f"{base} did not answer ({type(e).__name__}: {e})", fix)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 401 and body == _UNAUTHORIZED:
        return _passed("dokploy url", f"Dokploy answers at {base}")
    return _failed(
        "dokploy url",
        f"{base} answered HTTP {response.status_code} to GET /api/{_PING_PROCEDURE} without a key, "
        "where Dokploy answers 401 Unauthorized: it does not look like Dokploy's API",
        "set dokploy.url to the panel's own address (https://..., no path)",
    )


async def _lookup(client: DokployClient, target: DokployTarget) -> _Lookup:
    try:
        if target.kind == "compose":
            return _Lookup(compose=await client.compose(target.id))
        return _Lookup(application=await client.application(target.id))
    except DokployError as e:
        return _Lookup(error=e)


def _key_check(client: DokployClient, lookups: Sequence[_Lookup]) -> Check:
    refused = next((x.error for x in lookups if isinstance(x.error, DokployAuthError)), None)
    if refused is not None:
        return _failed("dokploy key", str(refused), f"create a new API key in Dokploy and pass it with {_KEY_FLAG}")
    # A row, a 404 or a permission refusal each mean the key itself was accepted.
    if any(x.error is None or isinstance(x.error, DokployNotFoundError | DokployPermissionError) for x in lookups):
        return _passed("dokploy key", f"accepted by {client.base_url}")
    if not lookups:
        return _skipped("dokploy key", "no Dokploy targets to check it against")
    return _skipped("dokploy key", "every lookup failed before the key was checked")


def _target_check(name: str, target: DokployTarget, lookup: _Lookup) -> Check:
    label = f"{name} {target.kind}"
    if lookup.compose is not None:
        c = lookup.compose
        return _passed(label, f"{target.id} exists: '{c.name}' ({c.app_name}), status {c.status or '-'}")
    if lookup.application is not None:
        a = lookup.application
        return _passed(label, f"{target.id} exists: '{a.name}', status {a.status or '-'}")
    error = lookup.error
    if isinstance(error, DokployNotFoundError):
        fix = f"copy the {target.kind} id from its page in Dokploy into {target.kind}_id in services.toml"
    elif isinstance(error, DokployPermissionError):
        fix = "use an API key of a Dokploy owner/admin, or grant this key's user access to the service"
    elif isinstance(error, DokployUnavailableError):
        fix = "check that Dokploy is healthy, then run doctor again"
    else:
        fix = "see the message; check the id and Dokploy's version (v0.29.6 or newer)"
    return _failed(label, str(error), fix)


def _compose_file_checks(
    config: Config, env: str, group: Group, target: DokployTarget, source: Path, lookup: _Lookup | None
) -> list[Check]:
    label = f"{env}/{group.name} compose file"
    remote = lookup.compose.compose_file if lookup is not None and lookup.compose is not None else ""
    if remote.strip():
        origin = f"Dokploy's compose file of {target.id}"
        read: Callable[[], composefile.ComposeFile] = lambda: composefile.parse(remote, file=origin)  # noqa: E731
    elif target.compose_file:
        origin = target.compose_file
        if not (source / origin).is_file():
            return [
                _failed(
                    label,
                    f"{origin} is not under {config_module.source_shown(source)}",
                    f"pass --source with the repository root, or fix compose_file in [groups.targets.{env}] "
                    f"of '{group.name}'",
                )
            ]
        read = lambda: composefile.load(source / target.compose_file)  # noqa: E731
    elif lookup is None or lookup.compose is None:
        # Dokploy was not read (no key, unreachable, key refused): its row above says why.
        return [_skipped(label, f"Dokploy's compose {target.id} could not be read, and services.toml names no file")]
    else:
        return [
            _skipped(
                label,
                "Dokploy gave no compose file and services.toml names none "
                f"(add compose_file to [groups.targets.{env}] of '{group.name}')",
            )
        ]
    try:
        parsed = read()
    except ConfigError as e:
        return [_failed(label, str(e), f"fix the YAML of {origin} so `docker compose config` accepts it")]
    return [_image_check(config, f"{label} {service}", origin, parsed, service) for service in group.services]


def _image_check(config: Config, label: str, origin: str, parsed: composefile.ComposeFile, service: str) -> Check:
    variable = config.services[service].image_variable
    image = config.image(service)
    uses = parsed.references(image, variable)
    if not uses:
        return _failed(
            label,
            f"{origin} has no service with image ${{{variable}}} or {image}: deploys would not change it",
            f"set `image: ${{{variable}}}` on the compose service that runs {service}",
        )
    problems = []
    for use in uses:
        where = f"compose service '{use.compose_service}'"
        if use.form == "variable" and use.variable != variable:
            problems.append(
                (
                    f"{where} uses ${{{use.variable}}}, but the pipeline pins ${{{variable}}}",
                    f'write `image: ${{{variable}}}`, or set image_variable = "{use.variable}" for {service}',
                )
            )
        elif use.form == "digest":
            problems.append(
                (
                    f"{where} pins the fixed digest {use.image}: no deploy can change it",
                    f"write `image: ${{{variable}}}` (the pipeline sets it to each published digest)",
                )
            )
        elif use.form == "tag" and not use.pull_always:
            problems.append(
                (
                    f"{where} uses the moving tag {use.image} without `pull_policy: always`: Dokploy runs "
                    "`docker compose up` without pulling, so a new image under that tag is never pulled",
                    f"write `image: ${{{variable}}}` (pinned by each deploy), or add `pull_policy: always`",
                )
            )
    if problems:
        detail = f"{origin}: " + "; ".join(p for p, _ in problems)
        return _failed(label, detail, "; ".join(dict.fromkeys(f for _, f in problems)))
    how = ", ".join(
        f"'{u.compose_service}' ({'${' + u.variable + '}' if u.form == 'variable' else u.image + ', pull always'})"
        for u in uses
    )
    return _passed(label, f"{origin}: {how}")


def _env_check(config: Config, name: str, group: Group, lookup: _Lookup | None, why: str) -> Check:
    label = f"{name} env"
    if lookup is None or lookup.compose is None:
        unread = lookup is not None and not isinstance(lookup.error, DokployAuthError)
        return _skipped(label, "Dokploy could not read the compose (see above)" if unread else why)
    present = envfile.values(lookup.compose.env)
    variables = [config.services[s].image_variable for s in group.services]
    missing = [v for v in variables if not present.get(v)]
    if missing:
        return _failed(
            label,
            f"compose {lookup.compose.id} has no {', '.join(missing)} in its Dokploy environment",
            f"add {', '.join(f'{v}=<image>' for v in missing)} under Environment of "
            f"'{lookup.compose.name}' in Dokploy (each deploy then pins it to the published digest)",
        )
    # Only the names: the env holds the services' own secrets.
    return _passed(label, f"sets {', '.join(variables)}" if variables else "the group has no images of ours to pin")


# ---- plumbing ------------------------------------------------------------------------


async def _concurrently(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Await every call at once; the results in the order given."""
    results: dict[int, T] = {}

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    return [results[index] for index in range(len(calls))]
