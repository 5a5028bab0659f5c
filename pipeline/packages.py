"""The GitHub Packages REST API for container images: list and delete versions.

GHCR refuses manifest DELETE on the registry API (405), so retention deletes
through this API instead. Each manifest pushed to GHCR (a tagged index, its
untagged platform images, attestations) is one *package version* here, named by
its digest; ``pipeline.retention`` decides which ones go.

Only classic personal access tokens work with this API (``read:packages`` to
list, plus ``delete:packages`` to delete). A workflow's ``GITHUB_TOKEN`` works
only if the repository has the Admin role on the package (Package settings ->
Manage Actions access).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from pipeline.errors import GitHubAPIError, MissingSecretError, UsageError
from pipeline.registry import retry_after_s, send_with_retries
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue

_API_VERSION: Final = "2022-11-28"
_PER_PAGE: Final = 100
_MAX_PAGES: Final = 1000
# GitHub's rate-limit docs: with no retry-after and no reset time, wait a minute.
_RATE_LIMIT_FALLBACK_S: Final = 60.0
_LAST_TAGGED_HINT: Final = "last tagged version"


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageVersion:
    """One manifest stored in a GHCR package, as GitHub lists it.

    Attributes:
        id: GitHub's version id (may exceed 2**31).
        digest: The manifest digest (GitHub calls it the version ``name``).
        tags: Tags on this manifest; empty for platform images and attestations.
        created_at: When the manifest was first pushed (timezone-aware).
    """

    id: int
    digest: str
    tags: tuple[str, ...]
    created_at: datetime


def is_rate_limited(response: httpx.Response) -> bool:
    """Whether a 403/429 is GitHub's rate limiter rather than a permission refusal."""
    # GitHub answers an exhausted rate limit with 403 or 429; a plain 403 without
    # these headers is a permission problem and must not be retried.
    if response.status_code not in (403, 429):
        return False
    return (
        response.status_code == 429
        or "retry-after" in response.headers
        or response.headers.get("x-ratelimit-remaining") == "0"
    )


def _rate_limit_wait(response: httpx.Response) -> float | None:
    """Seconds GitHub asks us to wait, or None when the response is final."""
    if response.status_code >= 500:
        return 0.0
    if not is_rate_limited(response):
        return None
    if "retry-after" in response.headers:
        return retry_after_s(response)
    reset = str(response.headers.get("x-ratelimit-reset", ""))
    if response.headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return _RATE_LIMIT_FALLBACK_S


def _message(response: httpx.Response) -> str:
    """GitHub's ``message`` field, else the status line."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _parse_version(item: Any, url: str) -> PackageVersion:
    """One version object from the API, checked field by field."""
    try:
        tags = item.get("metadata", {}).get("container", {}).get("tags", [])
        return PackageVersion(
            id=int(item["id"]),
            digest=str(item["name"]),
            tags=tuple(str(tag) for tag in tags),
            created_at=datetime.fromisoformat(str(item["created_at"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GitHubAPIError(
            f"GitHub sent a package version without id, name or created_at ({e!r}) from {url}: "
            f"check that api_url points at the GitHub REST API",
            url=url,
        ) from e


class GitHubPackages:
    """Lists and deletes versions of one owner's container packages."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token: SecretValue,
        owner: str,
        owner_type: Literal["org", "user"],
        api_url: str = "https://api.github.com",
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not token.reveal():
            raise MissingSecretError(
                f"deleting old images of {owner} needs a GitHub token: pass a classic personal access "
                f"token with read:packages and delete:packages"
            )
        if owner_type not in ("org", "user"):
            raise UsageError(f"owner_type must be 'org' or 'user', got '{owner_type}'")
        if not owner or "/" in owner:
            raise UsageError(f"owner '{owner}' should be a GitHub organisation or user name, e.g. bizoholic-digital")
        self.owner = owner
        self.owner_type = owner_type
        self._http = http
        self._token = token
        self._base = httpx.URL(api_url.rstrip("/") + "/")
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._retry = retry or RetryPolicy(attempts=4, timeout_s=120.0, wait_initial_s=1.0, wait_max_s=30.0)
        self._owner_checked = False

    def __repr__(self) -> str:
        return f"GitHubPackages(owner={self.owner!r}, owner_type={self.owner_type!r}, api={str(self._base)!r})"

    async def list_versions(self, package: str) -> list[PackageVersion]:
        """Every active version of a container package, following pagination."""
        await self._check_token_owner()
        url: httpx.URL | None = self._versions_url(package).copy_merge_params(
            {"per_page": _PER_PAGE, "state": "active"}
        )
        seen: set[str] = set()
        versions: list[PackageVersion] = []
        while url is not None and str(url) not in seen and len(seen) < _MAX_PAGES:
            seen.add(str(url))
            response = await self._send("GET", url)
            if response.status_code != 200:
                raise self._error(response, package=package, doing="list the versions of")
            try:
                items = response.json()
            except ValueError:
                items = None
            if not isinstance(items, list):
                raise GitHubAPIError(
                    f"GitHub sent something other than a list of versions from {url}: "
                    f"check that api_url points at the GitHub REST API",
                    url=str(url),
                    status=response.status_code,
                )
            versions.extend(_parse_version(item, str(url)) for item in items)
            next_link = response.links.get("next", {}).get("url")
            url = response.request.url.join(next_link) if next_link else None
        return versions

    async def delete_version(self, package: str, version_id: int) -> bool:
        """Delete one version; True if deleted now, False if it was already gone."""
        await self._check_token_owner()
        url = self._versions_url(package, version_id)
        response = await self._send("DELETE", url)
        if response.status_code == 204:
            return True
        if response.status_code == 404:
            # Listed a moment ago, so 404 means someone (or a retry) already deleted it.
            return False
        raise self._error(response, package=package, doing=f"delete version {version_id} of")

    async def _check_token_owner(self) -> None:
        """For user-owned packages: the /user routes act for the token's owner, who must be ``owner``.

        Otherwise another user's package of the same name would be listed and pruned.
        """
        if self.owner_type != "user" or self._owner_checked:
            return
        url = self._base.join("user")
        response = await self._send("GET", url)
        login = ""
        if response.status_code == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            login = str(answer.get("login") or "") if isinstance(answer, dict) else ""
        if response.status_code == 401:
            raise GitHubAPIError(
                f"GitHub refused the token ({_message(response)}): pass a valid classic personal access "
                f"token of {self.owner} with read:packages and delete:packages",
                url=str(url),
                status=401,
            )
        if not login:
            raise GitHubAPIError(
                f"GitHub would not say whose token this is (GET /user: HTTP {response.status_code}, "
                f"{_message(response)}): user-owned packages of {self.owner} can be pruned only with "
                f"{self.owner}'s own classic personal access token (read:packages, delete:packages)",
                url=str(url),
                status=response.status_code,
            )
        if login.lower() != self.owner.lower():
            raise UsageError(
                f"the GitHub token belongs to '{login}', but the packages belong to user '{self.owner}': "
                f"user-owned packages can be pruned only with the owner's own token; pass {self.owner}'s "
                "token (or --owner-type=org if the owner is an organisation)"
            )
        self._owner_checked = True

    def _versions_url(self, package: str, version_id: int | None = None) -> httpx.URL:
        if not package or package != package.strip():
            raise UsageError(
                f"package name '{package}' is empty or has spaces: use the image name, e.g. bizosaas-brain-gateway"
            )
        # A name like "repo/sub" is one path segment on this API: "repo%2Fsub".
        name = quote(package, safe="")
        owner = quote(self.owner, safe="")
        # A user's own packages, private ones included, are listed (with paging and
        # state) only through /user; /users/{name} lists public packages alone.
        prefix = f"orgs/{owner}" if self.owner_type == "org" else "user"
        path = f"{prefix}/packages/container/{name}/versions"
        return self._base.join(path if version_id is None else f"{path}/{version_id}")

    async def _send(self, method: str, url: httpx.URL) -> httpx.Response:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": _API_VERSION,
            "Authorization": f"Bearer {self._token.reveal()}",
        }

        async def send() -> httpx.Response:
            return await self._http.request(method, url, headers=headers, timeout=self._timeout)

        try:
            # DELETE is safe to repeat here: a second delete of the same version is a 404,
            # which delete_version reads as "already gone".
            return await send_with_retries(
                send, policy=self._retry, retry_wait=_rate_limit_wait, retry_transport_errors=True
            )
        except httpx.RequestError as e:
            raise GitHubAPIError(
                f"could not reach the GitHub API at {url.copy_with(query=None)} "
                f"({type(e).__name__}: {e}): check the network and api_url",
                url=str(url),
            ) from e

    def _error(self, response: httpx.Response, *, package: str, doing: str) -> GitHubAPIError:
        """Turn a failed response into the error that says what to fix."""
        status = response.status_code
        url = str(response.request.url)
        message = _message(response)
        what = f"{doing} package '{package}' of {self.owner_type} {self.owner}"
        if is_rate_limited(response):
            wait = _rate_limit_wait(response) or 0.0
            text = (
                f"GitHub's rate limit stopped us trying to {what} ({message}); it still asks "
                f"to wait {wait:.0f}s after our retries: rerun later or lower the request rate"
            )
        elif status == 401:
            text = (
                f"GitHub refused the token trying to {what} ({message}): pass a valid classic "
                f"personal access token with read:packages and delete:packages"
            )
        elif status == 403:
            text = (
                f"GitHub forbade us to {what} ({message}): a classic token needs read:packages "
                f"(and delete:packages to delete, plus admin on the package); a workflow "
                f"GITHUB_TOKEN needs the repository given the Admin role under Package settings "
                f"-> Manage Actions access"
            )
        elif status == 404:
            text = (
                f"GitHub could not {what} ({message}): check the package name (the image name "
                f"without ghcr.io/<owner>/), the owner and owner_type, and that the token can see it"
            )
        elif status == 400 and _LAST_TAGGED_HINT in message:
            text = (
                f"GitHub would not {what} ({message}): it is the package's last tagged version; "
                f"keep it, or delete the whole package on github.com"
            )
        else:
            text = f"GitHub answered HTTP {status} when we tried to {what}: {message}"
            if status >= 500:
                text += f" (after {self._retry.attempts} attempts): retry later"
        return GitHubAPIError(text, url=url, status=status)
