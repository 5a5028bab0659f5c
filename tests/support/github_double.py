"""A faithful double of GitHub's Packages REST API for container packages, on 127.0.0.1.

It follows the documented contract (docs.github.com/rest/packages) and the
behaviour seen in issue reports: the org, ``/users/{user}`` and ``/user`` routes
for listing, getting, deleting and restoring versions, plus getting a package and
listing packages; ``per_page`` clamped to 1..100 (default 30) with 1-based
``page`` and absolute ``Link`` URLs; ``state=active|deleted``; 204 on delete,
moving the version to ``deleted``; 400 when deleting the last tagged version;
404 ``Package not found.``; 401 without or with a bad token; 403 when a classic
token lacks a scope or a GITHUB_TOKEN-like token lacks the Admin role;
``X-OAuth-Scopes`` for classic tokens; rate-limit headers on every answer, and a
switch that forces 403/429 with ``retry-after``. Every request is recorded.

Package names are matched after percent-decoding each path segment once, so
``repo%2Fsub`` is package ``repo/sub`` and an unencoded ``/`` does not match.
The 403 wording for a missing ``delete:packages`` scope is our assumption; the
other messages are GitHub's.

Fixture (add ``"tests.support.github_double"`` to ``pytest_plugins``): ``github``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.registry import serve_asgi

DOCS = "https://docs.github.com/rest/packages/packages"
NOT_FOUND = "Package not found."
LAST_TAGGED = "You cannot delete the last tagged version of a package. You must delete the package instead."
TOO_MANY_DOWNLOADS = (
    "Publicly visible package versions with more than 5000 downloads cannot be deleted. "
    "Contact GitHub support for further assistance."
)
OwnerKind = Literal["org", "user"]


@dataclass
class Version:
    """One stored package version (a manifest digest with its tags)."""

    id: int
    name: str
    tags: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None = None
    downloads: int = 0


@dataclass
class Package:
    """A container package and its versions."""

    owner: str
    kind: OwnerKind
    name: str
    visibility: str = "private"
    versions: list[Version] = field(default_factory=list)


@dataclass(frozen=True)
class Token:
    """A credential: a classic PAT with scopes, or a workflow GITHUB_TOKEN."""

    user: str
    kind: Literal["classic", "github_token"] = "classic"
    scopes: frozenset[str] = frozenset({"read:packages", "delete:packages"})
    admin: bool = False


@dataclass(frozen=True)
class Recorded:
    """One request the double answered."""

    method: str
    path: str
    query: str
    status: int
    accept: str = ""
    api_version: str = ""


@dataclass
class Throttle:
    """Forced rate-limit answers for the next ``times`` requests."""

    status: int
    retry_after: int | None
    remaining_zero: bool
    reset_in: int
    times: int


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"message": message, "documentation_url": DOCS, "status": str(status)}
    return JSONResponse(body, status_code=status, headers=headers)


class GitHubDouble:
    """State plus the ASGI app; ``url`` is set once it is served."""

    def __init__(self) -> None:
        self.url = ""
        self.packages: dict[tuple[OwnerKind, str, str], Package] = {}
        self.tokens: dict[str, Token] = {}
        self.requests: list[Recorded] = []
        self.throttles: list[Throttle] = []
        # Real ids run past 2**31, so the client must not assume int32.
        self._ids = itertools.count(2**31 + 1000)
        self._used = 0
        self._epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    # ---- setup ---------------------------------------------------------------------

    def add_token(
        self,
        value: str,
        *,
        user: str = "octocat",
        kind: Literal["classic", "github_token"] = "classic",
        scopes: Iterable[str] = ("read:packages", "delete:packages"),
        admin: bool = False,
    ) -> None:
        """Accept ``value`` as a token of ``user`` with these scopes or role."""
        self.tokens[value] = Token(user=user, kind=kind, scopes=frozenset(scopes), admin=admin)

    def package(self, owner: str, name: str, *, kind: OwnerKind = "org", visibility: str = "private") -> Package:
        """The package, created empty if new (owners are case-insensitive)."""
        key = (kind, owner.lower(), name)
        if key not in self.packages:
            self.packages[key] = Package(owner=owner, kind=kind, name=name, visibility=visibility)
        return self.packages[key]

    def push(
        self,
        owner: str,
        name: str,
        digest: str,
        tags: Iterable[str] = (),
        *,
        created_at: dt.datetime | None = None,
        kind: OwnerKind = "org",
        downloads: int = 0,
    ) -> int:
        """Record a manifest push the way GHCR does; return the version id.

        The same digest again only gains the tags; a tag already on another
        version moves here (that version may become untagged).
        """
        package = self.package(owner, name, kind=kind)
        tags = list(tags)
        for other in package.versions:
            if other.name != digest and other.deleted_at is None:
                other.tags = [tag for tag in other.tags if tag not in tags]
        for version in package.versions:
            if version.name == digest and version.deleted_at is None:
                version.tags += [tag for tag in tags if tag not in version.tags]
                return version.id
        when = created_at or self._epoch + dt.timedelta(minutes=len(package.versions))
        version = Version(next(self._ids), digest, tags, when, when, downloads=downloads)
        package.versions.append(version)
        return version.id

    def throttle(
        self,
        status: int = 429,
        *,
        retry_after: int | None = 0,
        remaining_zero: bool = False,
        reset_in: int = 0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests as GitHub's rate limiter would."""
        self.throttles.append(Throttle(status, retry_after, remaining_zero, reset_in, times))

    def active(self, owner: str, name: str, *, kind: OwnerKind = "org") -> list[Version]:
        """The versions not deleted, newest first."""
        return [v for v in self._ordered(self.package(owner, name, kind=kind)) if v.deleted_at is None]

    # ---- HTTP ----------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        """The ASGI app."""
        methods = ["GET", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("ascii").split("?")[0]
        # A trailing slash is a different URL to GitHub: it must not match.
        response = self._route(request, [unquote(part) for part in path.removeprefix("/").split("/")])
        self._used += 1
        for name, value in self._rate_headers().items():
            response.headers.setdefault(name, value)
        self.requests.append(
            Recorded(
                request.method,
                path,
                request.url.query,
                response.status_code,
                accept=request.headers.get("accept", ""),
                api_version=request.headers.get("x-github-api-version", ""),
            )
        )
        return response

    def _rate_headers(self) -> dict[str, str]:
        reset = int(time.time()) + 3600
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(max(0, 5000 - self._used)),
            "x-ratelimit-used": str(self._used),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }

    def _route(self, request: Request, parts: list[str]) -> Response:
        throttled = self._throttled()
        if throttled is not None:
            return throttled
        token, refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        assert token is not None
        scope_header = {"x-oauth-scopes": ", ".join(sorted(token.scopes))} if token.kind == "classic" else {}
        response = self._dispatch(request, parts, token)
        response.headers.update(scope_header)
        return response

    def _throttled(self) -> Response | None:
        for throttle in self.throttles:
            if throttle.times > 0:
                throttle.times -= 1
                headers: dict[str, str] = {}
                if throttle.retry_after is not None:
                    headers["retry-after"] = str(throttle.retry_after)
                response = _error(throttle.status, "API rate limit exceeded for user ID 1.", headers)
                if throttle.remaining_zero:
                    response.headers.update(self._rate_headers())
                    response.headers["x-ratelimit-remaining"] = "0"
                    response.headers["x-ratelimit-reset"] = str(int(time.time()) + throttle.reset_in)
                return response
        return None

    def _authenticate(self, request: Request) -> tuple[Token | None, Response | None]:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if not header:
            return None, _error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or value not in self.tokens:
            return None, _error(401, "Bad credentials")
        return self.tokens[value], None

    def _dispatch(self, request: Request, parts: list[str], token: Token) -> Response:
        # /orgs/{o}/..., /users/{u}/..., /user/...
        if parts == ["user"] and request.method == "GET":
            if token.kind == "github_token":
                # An installation token is no user: GitHub refuses it here.
                return _error(403, "Resource not accessible by integration")
            return JSONResponse({"login": token.user, "id": 1, "type": "User"})
        if len(parts) >= 2 and parts[0] == "orgs":
            kind: OwnerKind = "org"
            owner, rest = parts[1], parts[2:]
        elif len(parts) >= 2 and parts[0] == "users":
            kind, owner, rest = "user", parts[1], parts[2:]
        elif parts and parts[0] == "user":
            kind, owner, rest = "user", token.user, parts[1:]
        else:
            return _error(404, "Not Found")
        method = request.method
        if rest == ["packages"] and method == "GET":
            return self._list_packages(request, kind, owner, token)
        if len(rest) < 3 or rest[:2] != ["packages", "container"]:
            return _error(404, "Not Found")
        key = (kind, owner.lower(), rest[2])
        package = self.packages.get(key)
        tail = rest[3:]
        if package is None or (parts[0] == "users" and package.visibility != "public"):
            # /users/{u} serves a user's public packages only (the docs: "a public package").
            return _error(404, NOT_FOUND)
        if not self._can_read(token):
            return _error(403, "You need at least read:packages scope to get a package's versions.")
        if tail == [] and method == "GET":
            return JSONResponse(self._package_json(request, package))
        if tail == ["versions"] and method == "GET":
            return self._list_versions(request, package)
        if len(tail) >= 2 and tail[0] == "versions" and tail[1].isdigit():
            version = next((v for v in package.versions if v.id == int(tail[1])), None)
            if version is None:
                return _error(404, NOT_FOUND)
            if tail[2:] == [] and method == "GET":
                return JSONResponse(self._version_json(request, package, version))
            if tail[2:] == [] and method == "DELETE":
                return self._delete(package, version, token)
            if tail[2:] == ["restore"] and method == "POST":
                return self._restore(version, token)
        return _error(404, "Not Found")

    def _can_read(self, token: Token) -> bool:
        return token.kind == "github_token" or bool({"read:packages", "write:packages"} & token.scopes)

    def _list_packages(self, request: Request, kind: OwnerKind, owner: str, token: Token) -> Response:
        if token.kind == "github_token":
            # A workflow token cannot list packages; it must name them.
            return _error(403, "Resource not accessible by integration")
        if not self._can_read(token):
            return _error(403, "You need at least read:packages scope to list packages.")
        if request.query_params.get("package_type") != "container":
            return _error(400, "package_type is required")
        found = [p for (k, o, _), p in sorted(self.packages.items()) if k == kind and o == owner.lower()]
        return self._page(request, [self._package_json(request, p) for p in found])

    def _list_versions(self, request: Request, package: Package) -> Response:
        state = request.query_params.get("state", "active")
        if state not in ("active", "deleted"):
            return _error(422, f"Invalid state: {state}")
        wanted = [v for v in self._ordered(package) if (v.deleted_at is None) == (state == "active")]
        return self._page(request, [self._version_json(request, package, v) for v in wanted])

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        per_page = min(100, max(1, _int(request.query_params.get("per_page"), 30)))
        page = max(1, _int(request.query_params.get("page"), 1))
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links += [f'<{request.url.include_query_params(page=page + 1)}>; rel="next"']
            links += [f'<{request.url.include_query_params(page=last)}>; rel="last"']
        if page > 1:
            links += [f'<{request.url.include_query_params(page=min(page - 1, last))}>; rel="prev"']
            links += [f'<{request.url.include_query_params(page=1)}>; rel="first"']
        headers = {"link": ", ".join(links)} if links else {}
        return JSONResponse(items[(page - 1) * per_page : page * per_page], headers=headers)

    def _delete(self, package: Package, version: Version, token: Token) -> Response:
        if token.kind == "github_token" and not token.admin:
            return _error(403, "Resource not accessible by integration")
        if token.kind == "classic" and "delete:packages" not in token.scopes:
            return _error(403, "You need at least delete:packages scope to delete a package's versions.")
        if version.deleted_at is not None:
            return _error(404, NOT_FOUND)
        tagged = [v for v in package.versions if v.deleted_at is None and v.tags]
        if version.tags and tagged == [version]:
            return _error(400, LAST_TAGGED)
        if package.visibility == "public" and version.downloads > 5000:
            return _error(400, TOO_MANY_DOWNLOADS)
        version.deleted_at = dt.datetime.now(dt.UTC)
        return Response(status_code=204)

    def _restore(self, version: Version, token: Token) -> Response:
        if token.kind == "classic" and "write:packages" not in token.scopes:
            return _error(403, "You need at least write:packages scope to restore a package's versions.")
        if version.deleted_at is None:
            return _error(404, NOT_FOUND)
        version.deleted_at = None
        return Response(status_code=204)

    @staticmethod
    def _ordered(package: Package) -> list[Version]:
        return sorted(package.versions, key=lambda v: (v.created_at, v.id), reverse=True)

    def _owner_path(self, package: Package) -> str:
        return f"orgs/{package.owner}" if package.kind == "org" else f"users/{package.owner}"

    def _package_json(self, request: Request, package: Package) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "id": zlib.crc32(package.name.encode()),
            "name": package.name,
            "package_type": "container",
            "visibility": package.visibility,
            "url": f"{base}/{self._owner_path(package)}/packages/container/{package.name}",
            "version_count": len([v for v in package.versions if v.deleted_at is None]),
        }

    def _version_json(self, request: Request, package: Package, version: Version) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        owner_path = self._owner_path(package)
        item: dict[str, Any] = {
            "id": version.id,
            "name": version.name,
            "url": f"{base}/{owner_path}/packages/container/{package.name}/versions/{version.id}",
            "package_html_url": f"https://github.com/{owner_path}/packages/container/package/{package.name}",
            "created_at": _iso(version.created_at),
            "updated_at": _iso(version.updated_at),
            "html_url": f"https://github.com/{owner_path}/packages/container/{package.name}/{version.id}",
            "metadata": {"package_type": "container", "container": {"tags": list(version.tags)}},
        }
        if version.deleted_at is not None:
            item["deleted_at"] = _iso(version.deleted_at)
        return item


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    """A running GitHub Packages double; ``github.url`` is its API base URL."""
    double = GitHubDouble()
    with serve_asgi(double.app) as url:
        double.url = url
        yield double
