"""A small async client for the OCI distribution API (GHCR, distribution 2.8).

The registry is the source of truth for what was built: promotion copies a
manifest to a new tag, retention reads index children, the doctor checks push
access. We wrote this rather than use a library because none fits: the Python
OCI clients are synchronous (oras-py on requests) or shell out to a CLI, and a
promotion must copy manifest *bytes* untouched (parsing and re-serialising JSON
changes the digest). So this is the few calls we need on one injected
``httpx.AsyncClient``:

- auth: the ``401`` + ``WWW-Authenticate`` challenge, either Bearer (a token
  exchange at the realm, cached per scope) or Basic (htpasswd registries);
- manifests by tag or digest with all four manifest types in ``Accept``;
- tags, delete, blob upload and cross-repository mount.

Reads (GET, HEAD) are retried on 429, 5xx and transport errors under a
``pipeline.retry.RetryPolicy`` (attempts and total time); writes never are.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import anyio
import httpx

from pipeline.errors import (
    ManifestNotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryPermissionError,
    UsageError,
)
from pipeline.retry import RetryPolicy, retry
from pipeline.secret import SecretValue

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})

# Without every type in Accept, a registry may answer 404 for an OCI manifest, or
# rewrite a Docker list to its amd64 child: a different digest than the tag holds.
_ACCEPT: Final = ", ".join(MANIFEST_TYPES)
_NAME_RE: Final = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG_RE: Final = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST_RE: Final = re.compile(r"^sha256:[a-f0-9]{64}$")
_CHALLENGE_PARAM_RE: Final = re.compile(r'([a-zA-Z_]+)="([^"]*)"')
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_TOKEN_TTL_DEFAULT_S: Final = 60.0
_TOKEN_SKEW_S: Final = 10.0
_MAX_TAG_PAGES: Final = 1000
_ATTESTATION_TYPE: Final = "attestation-manifest"


def sha256_digest(data: bytes) -> str:
    """The OCI digest of some bytes: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(ref: str) -> bool:
    """Whether a reference is a sha256 digest rather than a tag."""
    return bool(_DIGEST_RE.match(ref))


def is_loopback_host(host: str) -> bool:
    """Whether a host name or address (optionally with a port) is this machine."""
    # Local registries (docker-registry in tests and benches, a token server next
    # to it) speak plain http; anything that leaves the machine must use https.
    if host.startswith("["):
        name = host[1 : host.find("]")]
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def retry_after_s(response: httpx.Response) -> float:
    """Seconds asked for by a ``Retry-After`` header (delta or HTTP date), else 0."""
    value = str(response.headers.get("retry-after", "")).strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


class _RetryableResponseError(Exception):
    """Carries a response worth another try through ``pipeline.retry.retry``."""

    def __init__(self, response: httpx.Response, wait_s: float) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.wait_s = wait_s


async def send_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    *,
    policy: RetryPolicy,
    retry_wait: Callable[[httpx.Response], float | None],
    retry_transport_errors: bool,
) -> httpx.Response:
    """Send until a final answer, within ``policy``; return the last response.

    ``retry_wait`` says whether a response is worth another try: ``None`` means
    final, a number is the wait the server asked for (0: the policy's backoff).
    When the policy is spent, the last response (or transport error) goes to the
    caller, which turns it into a message.
    """

    async def attempt() -> httpx.Response:
        response = await send()
        wait = retry_wait(response)
        if wait is not None:
            raise _RetryableResponseError(response, wait)
        return response

    def retry_on(error: BaseException) -> bool | float:
        if isinstance(error, _RetryableResponseError):
            return error.wait_s or True
        return retry_transport_errors and isinstance(error, httpx.TransportError)

    try:
        return await retry(attempt, policy=policy, retry_on=retry_on)
    except _RetryableResponseError as spent:
        return spent.response


def _registry_retry_wait(response: httpx.Response) -> float | None:
    """Registry reads are retried on 429 and 5xx, honouring ``Retry-After``."""
    if response.status_code in _RETRY_STATUSES:
        return retry_after_s(response)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """What a tag points at, read without downloading the manifest."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A manifest's exact bytes with its media type and digest."""

    data: bytes = field(repr=False)
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str) -> Manifest:
        """Wrap bytes we built ourselves, computing their digest."""
        return cls(data=data, media_type=media_type, digest=sha256_digest(data))

    @property
    def is_index(self) -> bool:
        """Whether this is a multi-platform index (OCI index or Docker list)."""
        return self.media_type in INDEX_TYPES


def _index_entries(manifest: Manifest) -> list[dict[str, Any]]:
    """The ``manifests`` entries of an index; empty for a single-platform manifest."""
    if not manifest.is_index:
        return []
    try:
        entries = json.loads(manifest.data)["manifests"]
    except (ValueError, KeyError, TypeError) as e:
        raise RegistryError(
            f"manifest {manifest.digest} says it is {manifest.media_type} but has no valid "
            f"'manifests' list: re-push the image"
        ) from e
    if not isinstance(entries, list):
        raise RegistryError(f"manifest {manifest.digest} has a 'manifests' field that is not a list")
    return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("digest"), str)]


def children(manifest: Manifest) -> list[str]:
    """Digests an index references (platform images and attestations), in order."""
    return [entry["digest"] for entry in _index_entries(manifest)]


def subject(manifest: Manifest) -> str:
    """The digest an OCI 1.1 referrer (a signature, an attestation) points at; "" for other manifests."""
    try:
        document = json.loads(manifest.data)
    except ValueError:
        return ""
    found = document.get("subject") if isinstance(document, dict) else None
    digest = found.get("digest") if isinstance(found, dict) else None
    return digest if isinstance(digest, str) else ""


def attestations(manifest: Manifest) -> dict[str, str]:
    """Buildx attestation children of an index, mapped to the platform digest each describes."""
    found: dict[str, str] = {}
    for entry in _index_entries(manifest):
        annotations = entry.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == _ATTESTATION_TYPE:
            found[entry["digest"]] = str(annotations.get("vnd.docker.reference.digest", ""))
    return found


@dataclass(frozen=True, slots=True)
class _Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    realm: str = ""
    service: str = ""
    error: str = ""


def _parse_challenge(header: str) -> _Challenge | None:
    """Parse ``Bearer realm=..,service=..`` or ``Basic realm=..``; None if neither."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(_CHALLENGE_PARAM_RE.findall(rest))
    if scheme.lower() not in {"bearer", "basic"}:
        return None
    return _Challenge(
        scheme=scheme.lower(),
        realm=params.get("realm", ""),
        service=params.get("service", ""),
        error=params.get("error", ""),
    )


@dataclass(frozen=True, slots=True)
class _CachedToken:
    token: SecretValue
    expires_at: float


def _error_detail(response: httpx.Response) -> str:
    """The registry's ``{"errors": [...]}`` body as one line, else the status line."""
    try:
        errors = response.json().get("errors") or []
        parts = [
            ": ".join(str(part) for part in (error.get("code"), error.get("message")) if part)
            for error in errors
            if isinstance(error, dict)
        ]
    except (ValueError, AttributeError):
        parts = []
    text = "; ".join(part for part in parts if part)
    return text or f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _header(response: httpx.Response, name: str) -> str:
    """A response header as a string, empty when absent."""
    return str(response.headers.get(name, ""))


def _content_type(response: httpx.Response) -> str:
    """The media type without parameters (the spec says to ignore them)."""
    return _header(response, "content-type").split(";")[0].strip()


class RegistryClient:
    """Talks to one OCI registry, as one user, over an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        registry: str,
        username: str = "",
        token: SecretValue | None = None,
        scheme: Literal["https", "http"] | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not registry or "/" in registry:
            raise UsageError(
                f"registry '{registry}' should be a host like ghcr.io or 127.0.0.1:5000, without a scheme or path"
            )
        self.registry = registry
        self._http = http
        self._host = httpx.URL(f"http://{registry}/").host
        self._scheme = scheme or ("http" if is_loopback_host(registry) else "https")
        self._base = httpx.URL(f"{self._scheme}://{registry}/v2/")
        # GHCR takes any non-empty user name with a token; "token" is what others send.
        self._username = username or "token"
        self._secret = token
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._retry = retry or RetryPolicy()
        self._challenge: _Challenge | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _CachedToken] = {}
        self._token_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self.registry!r}, username={self._username!r})"

    # ---- manifests -------------------------------------------------------------------

    async def resolve(self, repo: str, ref: str) -> Descriptor:
        """The digest, media type and size a tag (or digest) points at."""
        url = self._url(repo, "manifests", ref)
        response = await self._call("HEAD", url, repo=repo, actions="pull", headers={"Accept": _ACCEPT})
        if response.status_code != 200:
            raise self._error(response, repo=repo, ref=ref, doing="read")
        digest = _header(response, "docker-content-digest")
        media_type = self._check_media_type(_content_type(response), repo, ref)
        if not digest:
            # Registries built to an older spec leave the header out: hash the body.
            manifest = await self.get_manifest(repo, ref)
            return Descriptor(digest=manifest.digest, media_type=manifest.media_type, size=len(manifest.data))
        return Descriptor(digest=digest, media_type=media_type, size=int(response.headers.get("content-length", "0")))

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest's exact bytes, checked against the digest the registry claims."""
        url = self._url(repo, "manifests", ref)
        response = await self._call("GET", url, repo=repo, actions="pull", headers={"Accept": _ACCEPT})
        if response.status_code != 200:
            raise self._error(response, repo=repo, ref=ref, doing="read")
        media_type = self._check_media_type(_content_type(response), repo, ref)
        manifest = Manifest.from_bytes(response.content, media_type)
        # Both the registry's claim and the digest we asked for must name these bytes.
        claims = {_header(response, "docker-content-digest"), ref if is_digest(ref) else ""} - {""}
        if wrong := sorted(claims - {manifest.digest}):
            raise RegistryError(
                f"registry {self.registry} sent {repo}:{ref} with bytes hashing to {manifest.digest}, "
                f"not {wrong[0]}: the registry or a proxy altered the manifest; retry, and if it "
                f"persists do not promote this image",
                url=str(url),
                status=response.status_code,
            )
        return manifest

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> str:
        """Store the manifest bytes untouched at a tag or digest; return the registry's digest."""
        self._check_media_type(manifest.media_type, repo, ref)
        url = self._url(repo, "manifests", ref)
        response = await self._call(
            "PUT",
            url,
            repo=repo,
            actions="push,pull",
            headers={"Content-Type": manifest.media_type},
            content=manifest.data,
        )
        if response.status_code not in (200, 201):
            raise self._error(response, repo=repo, ref=ref, doing="push")
        return _header(response, "docker-content-digest") or manifest.digest

    async def copy_tag(self, repo: str, source_ref: str, new_tags: Sequence[str]) -> str:
        """Point each new tag at the manifest ``source_ref`` has, byte for byte; return its digest."""
        for tag in new_tags:
            self._check_ref(tag)
        source = await self.get_manifest(repo, source_ref)
        for tag in new_tags:
            stored = await self.put_manifest(repo, tag, source)
            if stored != source.digest:
                raise RegistryError(
                    f"registry {self.registry} stored {repo}:{tag} as {stored}, but the source "
                    f"{repo}:{source_ref} is {source.digest}: the copy was not byte-exact, so the "
                    f"tag no longer names the tested image; re-run the promotion",
                    url=str(self._url(repo, "manifests", tag)),
                )
        return source.digest

    async def image_config(self, repo: str, ref: str) -> dict[str, Any]:
        """The image's config (labels, env, ...); for an index, that of its first platform."""
        manifest = await self.get_manifest(repo, ref)
        if manifest.is_index:
            platforms = children(manifest)
            if not platforms:
                raise RegistryError(f"{repo}:{ref} is an index with no images in it")
            manifest = await self.get_manifest(repo, platforms[0])
        try:
            config_digest = json.loads(manifest.data)["config"]["digest"]
            config = json.loads(await self.get_blob(repo, config_digest))
        except (ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"{repo}:{ref} has no readable image config ({e})") from None
        if not isinstance(config, dict):
            raise RegistryError(f"{repo}:{ref} has an image config that is not a JSON object")
        return config

    async def revision(self, repo: str, ref: str) -> str:
        """The commit an image was built from: its ``org.opencontainers.image.revision`` label."""
        config = await self.image_config(repo, ref)
        labels = (config.get("config") or {}).get("Labels") or {}
        revision = str(labels.get("org.opencontainers.image.revision", ""))
        if not revision:
            raise RegistryError(
                f"{repo}:{ref} has no org.opencontainers.image.revision label, so its commit is unknown; "
                "rebuild it with this pipeline, which sets the label"
            )
        return revision

    async def get_blob(self, repo: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        url = self._url(repo, "blobs", digest)
        response = await self._call("GET", url, repo=repo, actions="pull")
        if response.is_redirect and "location" in response.headers:
            # GHCR serves blobs from a storage host: the registry's credentials never go there.
            response = await self._http.get(
                response.request.url.join(response.headers["location"]), timeout=self._timeout
            )
        if response.status_code != 200:
            raise self._error(response, repo=repo, ref=digest, doing="read")
        if sha256_digest(response.content) != digest:
            raise RegistryError(f"registry {self.registry} sent blob {digest} of {repo} with other bytes: retry")
        return response.content

    async def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (this removes every tag on it)."""
        if not is_digest(digest):
            raise UsageError(
                f"delete_manifest needs a digest (sha256:<64 hex>), got '{digest}': "
                f"resolve the tag first, registries cannot delete by tag"
            )
        url = self._url(repo, "manifests", digest)
        response = await self._call("DELETE", url, repo=repo, actions="delete")
        if response.status_code not in (200, 202):
            raise self._error(response, repo=repo, ref=digest, doing="delete")

    async def tags(self, repo: str) -> list[str]:
        """Every tag of a repository, sorted, following ``Link`` pagination."""
        url: httpx.URL | None = self._url(repo, "tags", "list").copy_add_param("n", "1000")
        seen: set[str] = set()
        found: set[str] = set()
        while url is not None and str(url) not in seen and len(seen) < _MAX_TAG_PAGES:
            seen.add(str(url))
            response = await self._call("GET", url, repo=repo, actions="pull")
            if response.status_code != 200:
                raise self._error(response, repo=repo, ref="", doing="list tags of")
            try:
                found.update(response.json().get("tags") or [])
            except (ValueError, AttributeError, TypeError) as e:
                raise RegistryError(
                    f"registry {self.registry} sent a tag list for {repo} that is not JSON "
                    f"{{name, tags}}: check that {self._base} is an OCI registry",
                    url=str(url),
                ) from e
            next_link = response.links.get("next", {}).get("url")
            url = response.request.url.join(next_link) if next_link else None
        return sorted(found)

    # ---- blobs and access ------------------------------------------------------------

    async def blob_exists(self, repo: str, digest: str) -> bool:
        """Whether the repository already has this blob."""
        url = self._url(repo, "blobs", digest)
        response = await self._call("HEAD", url, repo=repo, actions="pull")
        if response.status_code == 404:
            return False
        # A redirect means the blob exists and lives in the registry's storage backend.
        if response.status_code == 200 or response.is_redirect:
            return True
        raise self._error(response, repo=repo, ref=digest, doing="read")

    async def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob in one piece unless the repository has it; return its digest."""
        digest = sha256_digest(data)
        if await self.blob_exists(repo, digest):
            return digest
        started = await self._call("POST", self._url(repo, "blobs", "uploads/"), repo=repo, actions="push,pull")
        if started.status_code == 201:
            return digest
        if started.status_code != 202:
            raise self._error(started, repo=repo, ref=digest, doing="push")
        # copy_add_param keeps the upload's own query (distribution's _state); params= drops it.
        location = self._location(started).copy_add_param("digest", digest)
        response = await self._call(
            "PUT",
            location,
            repo=repo,
            actions="push,pull",
            headers={"Content-Type": "application/octet-stream"},
            content=data,
        )
        if response.status_code != 201:
            raise self._error(response, repo=repo, ref=digest, doing="push")
        stored = _header(response, "docker-content-digest") or digest
        if stored != digest:
            raise RegistryError(
                f"registry {self.registry} stored a blob of {repo} as {stored}, expected {digest}",
                url=str(location),
            )
        return digest

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Link a blob from another repository without uploading it; False if the registry declined."""
        self._check_name(from_repo)
        url = self._url(repo, "blobs", "uploads/").copy_add_param("mount", digest).copy_add_param("from", from_repo)
        response = await self._call(
            "POST",
            url,
            repo=repo,
            actions="push,pull",
            extra_scopes=(f"repository:{from_repo}:pull",),
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            # The registry started a normal upload instead; we do not need it.
            await self._cancel_upload(repo, response)
            return False
        raise self._error(response, repo=repo, ref=digest, doing="push")

    async def check_push_access(self, repo: str) -> None:
        """Prove these credentials may push to ``repo``, by starting an upload and cancelling it.

        This goes through the same challenge and token exchange (push scope) as a
        real push, and also works on Basic-auth registries. Nothing is stored: an
        unfinished upload holds no data, and we cancel it where the registry allows.
        """
        response = await self._call("POST", self._url(repo, "blobs", "uploads/"), repo=repo, actions="push,pull")
        if response.status_code not in (201, 202):
            raise self._error(response, repo=repo, ref="", doing="push")
        if response.status_code == 202:
            await self._cancel_upload(repo, response)

    # ---- plumbing --------------------------------------------------------------------

    def _check_name(self, repo: str) -> None:
        if not _NAME_RE.match(repo):
            raise UsageError(
                f"'{repo}' is not a valid repository name on {self.registry}: use lowercase "
                f"letters, digits, '.', '_', '-' and '/' (e.g. bizoholic-digital/bizosaas-brain-gateway)"
            )

    def _check_ref(self, ref: str) -> None:
        if not (is_digest(ref) or _TAG_RE.match(ref)):
            raise UsageError(
                f"'{ref}' is neither a tag nor a sha256 digest: tags are up to 128 of "
                f"[A-Za-z0-9_.-] and do not start with '.' or '-'"
            )

    def _check_media_type(self, media_type: str, repo: str, ref: str) -> str:
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(
                f"{self.registry}/{repo}:{ref} has manifest media type '{media_type or '(none)'}', "
                f"which the pipeline does not handle (it knows {', '.join(MANIFEST_TYPES)}): "
                f"re-push it as an OCI or Docker v2 image"
            )
        return media_type

    def _url(self, repo: str, kind: str, ref: str) -> httpx.URL:
        self._check_name(repo)
        if kind == "manifests":
            self._check_ref(ref)
        if kind == "blobs" and ref != "uploads/" and not is_digest(ref):
            raise UsageError(f"'{ref}' is not a blob digest: blobs are addressed as sha256:<64 hex>")
        return self._base.join(f"{repo}/{kind}/{ref}")

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {self.registry} started an upload without a Location header",
                url=str(response.request.url),
                status=response.status_code,
            )
        return response.request.url.join(location)

    async def _cancel_upload(self, repo: str, started: httpx.Response) -> None:
        """Best effort: GHCR answers 405 and abandoned uploads expire anyway."""
        try:
            response = await self._call("DELETE", self._location(started), repo=repo, actions="delete")
            await response.aclose()
        except RegistryError:
            pass

    def _same_origin(self, url: httpx.URL) -> bool:
        """Scheme, host and port of the registry: only there do our credentials go."""
        return (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        repo: str,
        actions: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        extra_scopes: Sequence[str] = (),
    ) -> httpx.Response:
        """Send with auth (answering the challenge) and, for reads, retries."""
        # Push scope first: some registries read only the first scope of a request.
        scopes = (f"repository:{repo}:{actions}", *extra_scopes)
        if not self._same_origin(url):
            return await self._send(method, url, headers or {}, content)
        auth = await self._auth_headers(scopes)
        response = await self._send(method, url, {**(headers or {}), **auth}, content)
        token_refused_once = False
        # At most two redos: one to answer a first challenge, one after a held token is refused.
        for _ in range(2):
            if response.status_code != 401:
                return response
            challenge = _parse_challenge(_header(response, "www-authenticate"))
            if challenge is None or challenge.error == "insufficient_scope":
                return response
            if challenge.scheme == "basic" and (self._secret is None or auth):
                return response
            if auth:
                if token_refused_once:
                    return response
                token_refused_once = True
            self._challenge = _Challenge(challenge.scheme, challenge.realm, challenge.service)
            self._tokens.pop(self._token_key(scopes), None)
            await response.aclose()
            auth = await self._auth_headers(scopes)
            response = await self._send(method, url, {**(headers or {}), **auth}, content)
        return response

    async def _send(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], content: bytes | None
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            return await self._http.request(
                method,
                url,
                headers=headers,
                content=content,
                timeout=self._timeout,
                follow_redirects=False,
            )

        try:
            return await send_with_retries(
                send,
                policy=self._retry,
                retry_wait=_registry_retry_wait if method in {"GET", "HEAD"} else lambda _: None,
                retry_transport_errors=method in {"GET", "HEAD"},
            )
        except httpx.RequestError as e:
            raise RegistryError(
                f"could not reach registry {self.registry} ({method} {url.copy_with(query=None)}: "
                f"{type(e).__name__}: {e}): check the registry host and the network",
                url=str(url.copy_with(query=None)),
            ) from e

    def _token_key(self, scopes: Sequence[str]) -> tuple[str, str, tuple[str, ...]]:
        challenge = self._challenge or _Challenge("")
        return (challenge.realm, challenge.service, tuple(sorted(scopes)))

    async def _auth_headers(self, scopes: Sequence[str]) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return {"Authorization": self._basic()} if self._secret is not None else {}
        key = self._token_key(scopes)
        async with self._token_lock:
            cached = self._tokens.get(key)
            if cached is None or cached.expires_at <= time.monotonic():
                cached = await self._fetch_token(challenge, scopes)
                self._tokens[key] = cached
        return {"Authorization": f"Bearer {cached.token.reveal()}"}

    def _basic(self) -> str:
        secret = self._secret.reveal() if self._secret is not None else ""
        pair = f"{self._username}:{secret}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _check_realm(self, realm: str) -> httpx.URL:
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            url = httpx.URL()
        # Credentials go only to the registry's own host (or this machine): a registry
        # must not be able to send our token to a server of its choosing. Any port of
        # that host, unlike uploads: token services often listen beside the registry.
        own_host = url.host == self._host and url.scheme in {"https", self._scheme}
        local = bool(url.host) and is_loopback_host(url.host) and url.scheme in {"http", "https"}
        if not (own_host or local):
            raise RegistryAuthError(
                f"registry {self.registry} asked for credentials at '{realm}', which is not on "
                f"{self._host}: refusing to send them there; use the registry's own token service"
            )
        return url

    async def _fetch_token(self, challenge: _Challenge, scopes: Sequence[str]) -> _CachedToken:
        """Exchange credentials for a Bearer token covering ``scopes`` at the challenge's realm."""
        realm = self._check_realm(challenge.realm)
        params: list[tuple[str, str | int | float | bool | None]] = [("scope", scope) for scope in scopes]
        if challenge.service:
            params.insert(0, ("service", challenge.service))
        headers = {"Authorization": self._basic()} if self._secret is not None else {}

        async def send() -> httpx.Response:
            return await self._http.get(
                realm.copy_merge_params(params),
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            )

        try:
            response = await send_with_retries(
                send, policy=self._retry, retry_wait=_registry_retry_wait, retry_transport_errors=True
            )
        except httpx.RequestError as e:
            raise RegistryAuthError(
                f"could not reach the token service {realm} of registry {self.registry} "
                f"({type(e).__name__}): check the network",
                url=str(realm),
            ) from e
        scope_text = " ".join(scopes)
        if response.status_code in (401, 403):
            if self._secret is None:
                raise RegistryAuthError(
                    f"registry {self.registry} needs credentials for {scope_text}: pass "
                    f"--registry-user and a token with read:packages (write:packages to push)",
                    url=str(realm),
                    status=response.status_code,
                )
            error_type = RegistryAuthError if response.status_code == 401 else RegistryPermissionError
            raise error_type(
                f"registry {self.registry} refused the credentials of user '{self._username}' for "
                f"{scope_text} ({_error_detail(response)}): check --registry-user and that the "
                f"token has read:packages (write:packages to push)",
                url=str(realm),
                status=response.status_code,
            )
        if response.status_code != 200:
            raise RegistryAuthError(
                f"the token service {realm} of registry {self.registry} answered "
                f"{response.status_code} ({_error_detail(response)}): retry later",
                url=str(realm),
                status=response.status_code,
            )
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            ttl = float(body.get("expires_in") or _TOKEN_TTL_DEFAULT_S)
        except (ValueError, AttributeError, TypeError):
            value, ttl = None, 0.0
        if not isinstance(value, str) or not value:
            raise RegistryAuthError(
                f"the token service {realm} of registry {self.registry} sent no token: "
                f"check that it is a Docker token service",
                url=str(realm),
            )
        # Refresh a little before expiry so a token never dies in flight.
        lifetime = max(ttl - _TOKEN_SKEW_S, ttl / 2)
        return _CachedToken(SecretValue(f"{self.registry} token", value), time.monotonic() + lifetime)

    def _error(self, response: httpx.Response, *, repo: str, ref: str, doing: str) -> RegistryError:
        """Turn a failed response into the error that says what to fix."""
        status = response.status_code
        url = str(response.request.url.copy_with(query=None))
        detail = _error_detail(response)
        where = f"{repo}@{ref}" if is_digest(ref) else (f"{repo}:{ref}" if ref else repo)
        challenge = _parse_challenge(_header(response, "www-authenticate"))
        if status in (401, 403) and self._secret is None:
            return RegistryAuthError(
                f"registry {self.registry} needs credentials to {doing} {where} ({detail}): pass "
                f"--registry-user and a token with read:packages (write:packages to push)",
                url=url,
                status=status,
            )
        if status == 403 or (status == 401 and challenge is not None and challenge.error == "insufficient_scope"):
            return RegistryPermissionError(
                f"registry {self.registry} does not let user '{self._username}' {doing} {where} "
                f"({detail}): the token needs write:packages to push (delete:packages to delete), "
                f"and on GHCR the package must grant this repository access under Package "
                f"settings -> Manage Actions access",
                url=url,
                status=status,
            )
        if status == 401:
            return RegistryAuthError(
                f"registry {self.registry} refused the credentials of user '{self._username}' for "
                f"{repo} ({detail}): check --registry-user and that the token has read:packages "
                f"(write:packages to push); GHCR also answers 401 for a repository that does not exist, "
                f"so check that {self.registry}/{repo} is the right image",
                url=url,
                status=status,
            )
        if status == 404:
            return ManifestNotFoundError(
                f"{self.registry}/{where} not found ({detail}): check the repository name "
                f"(lowercase owner/image) and that this tag or digest was pushed",
                url=url,
                status=status,
            )
        if status == 405 and doing == "delete":
            return RegistryError(
                f"registry {self.registry} does not allow deletes ({detail}): on GHCR delete package "
                f"versions through the GitHub Packages API (the retention step does); on "
                f"docker-registry set storage.delete.enabled: true",
                url=url,
                status=status,
            )
        if status == 429 or status >= 500:
            return RegistryError(
                f"registry {self.registry} kept failing to {doing} {where} ({detail}) after "
                f"{self._retry.attempts} attempts within {self._retry.timeout_s:.0f}s: retry later",
                url=url,
                status=status,
            )
        return RegistryError(
            f"registry {self.registry} refused to {doing} {where}: HTTP {status} ({detail})",
            url=url,
            status=status,
        )
