"""RegistryClient against a real docker-registry 2.8.2 (plain, Basic, token auth, faults)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.errors import (
    ManifestNotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryPermissionError,
    UsageError,
)
from pipeline.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
    attestations,
    children,
    is_loopback_host,
    sha256_digest,
)
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from tests.support.images import build_image, layer, push_image, push_index
from tests.support.registry import (
    BASIC_PASSWORD,
    BASIC_USER,
    READER_PASSWORD,
    READER_USER,
    TOKEN_PASSWORD,
    TOKEN_USER,
    FaultProxy,
    RunningRegistry,
    TokenAuthRegistry,
    loopback_http,
    serve_asgi,
)

pytestmark = pytest.mark.registry

FAST = RetryPolicy(attempts=3, timeout_s=5.0, wait_initial_s=0.01, wait_max_s=0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def client_for(http: httpx.AsyncClient, host: str, user: str = "", password: str | None = None) -> RegistryClient:
    token = SecretValue("REGISTRY_TOKEN", password) if password is not None else None
    return RegistryClient(http, registry=host, username=user, token=token, retry=FAST, timeout_s=10)


async def _oci_manifest(c: RegistryClient) -> str:
    return await push_image(c, "demo/app", "src", flavour="oci")


async def _docker_manifest(c: RegistryClient) -> str:
    return await push_image(c, "demo/app", "src", flavour="docker")


async def _oci_index(c: RegistryClient) -> str:
    return (await push_index(c, "demo/app", "src", flavour="oci", attestations=True))[0]


async def _docker_list(c: RegistryClient) -> str:
    return (await push_index(c, "demo/app", "src", flavour="docker"))[0]


@pytest.mark.parametrize(
    ("push", "media_type"),
    [
        (_oci_manifest, OCI_MANIFEST),
        (_oci_index, OCI_INDEX),
        (_docker_manifest, DOCKER_MANIFEST),
        (_docker_list, DOCKER_LIST),
    ],
    ids=["oci-manifest", "oci-index", "docker-manifest", "docker-list"],
)
async def test_copy_tag_is_byte_exact_for_every_manifest_type(
    registry: RunningRegistry,
    http: httpx.AsyncClient,
    push: Callable[[RegistryClient], Awaitable[str]],
    media_type: str,
) -> None:
    """Promoting by copy gives new tags the very bytes, media type and digest of the source."""
    c = client_for(http, registry.host)
    digest = await push(c)
    source = await c.get_manifest("demo/app", "src")

    copied = await c.copy_tag("demo/app", "src", ["prod", "v1.2.3"])

    assert copied == digest == source.digest
    for tag in ("prod", "v1.2.3"):
        again = await c.get_manifest("demo/app", tag)
        assert again.data == source.data
        assert again.media_type == media_type
        described = await c.resolve("demo/app", tag)
        assert (described.digest, described.media_type, described.size) == (digest, media_type, len(source.data))


async def test_put_with_a_content_type_that_does_not_match_the_bytes_is_refused(
    registry: RunningRegistry, http: httpx.AsyncClient
) -> None:
    """OCI bytes sent as a Docker manifest are rejected by the registry with its reason."""
    c = client_for(http, registry.host)
    await push_image(c, "demo/app", "src")
    source = await c.get_manifest("demo/app", "src")
    mislabelled = Manifest(data=source.data, media_type=DOCKER_MANIFEST, digest=source.digest)

    with pytest.raises(RegistryError) as caught:
        await c.put_manifest("demo/app", "wrong", mislabelled)

    assert caught.value.status == 400
    assert "MANIFEST_INVALID" in str(caught.value)
    assert "demo/app:wrong" in str(caught.value)


async def test_a_manifest_type_we_do_not_handle_is_refused_by_name(
    registry: RunningRegistry, http: httpx.AsyncClient
) -> None:
    """A schema-1 manifest is refused before sending, naming its media type."""
    c = client_for(http, registry.host)
    schema1 = Manifest.from_bytes(b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws")

    with pytest.raises(
        RegistryError, match=r"manifest media type 'application/vnd\.docker\.distribution\.manifest\.v1"
    ):
        await c.put_manifest("demo/app", "old", schema1)


async def test_an_index_whose_children_are_missing_is_refused_naming_the_blob(
    registry: RunningRegistry, http: httpx.AsyncClient
) -> None:
    """A manifest referencing blobs the repository lacks gets MANIFEST_BLOB_UNKNOWN."""
    c = client_for(http, registry.host)
    _, manifest = build_image([layer(b"never uploaded")])

    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        await c.put_manifest("demo/app", "broken", manifest)


async def test_unknown_tag_names_the_repository_and_tag(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """Reading a tag that was never pushed raises ManifestNotFoundError naming repo and tag."""
    c = client_for(http, registry.host)
    await push_image(c, "demo/app", "v1")

    with pytest.raises(ManifestNotFoundError) as by_head:
        await c.resolve("demo/app", "v9")
    with pytest.raises(ManifestNotFoundError) as by_get:
        await c.get_manifest("demo/app", "v9")

    assert f"{registry.host}/demo/app:v9 not found" in str(by_head.value)
    assert "MANIFEST_UNKNOWN" in str(by_get.value)
    assert by_get.value.status == 404


async def test_tags_come_back_sorted(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """The tag list is sorted although distribution 2.8 returns it in storage order."""
    c = client_for(http, registry.host)
    await push_image(c, "demo/app", "v2")
    await c.copy_tag("demo/app", "v2", ["a1", "staging", "c3", "b2", "v10"])

    assert await c.tags("demo/app") == ["a1", "b2", "c3", "staging", "v10", "v2"]


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-link", "absolute-link"])
async def test_tags_follow_link_pagination(fault_proxy: FaultProxy, http: httpx.AsyncClient, absolute: bool) -> None:
    """Every page is fetched by following rel=next, whether the Link is relative or absolute."""
    c = client_for(http, fault_proxy.host)
    await push_image(c, "demo/app", "t0")
    wanted = [f"t{i}" for i in range(7)]
    await c.copy_tag("demo/app", "t0", wanted[1:])
    fault_proxy.paginate_tags = 3
    fault_proxy.absolute_links = absolute

    assert await c.tags("demo/app") == wanted
    pages = [path for method, path, _ in fault_proxy.seen if method == "GET" and "/tags/list" in path]
    assert len(pages) == 3


async def test_tags_of_a_missing_repository_raise_not_found(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """Listing tags of a repository that was never pushed names the repository."""
    c = client_for(http, registry.host)

    with pytest.raises(ManifestNotFoundError, match=r"demo/nothing not found \(NAME_UNKNOWN"):
        await c.tags("demo/nothing")


async def test_delete_by_digest_removes_every_tag_on_it(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """A manifest delete removes all its tags; deleting again is a not-found error."""
    c = client_for(http, registry.host)
    digest = await push_image(c, "demo/app", "v1")
    keep = await push_image(c, "demo/app", "v2", payload=b"another image")
    await c.copy_tag("demo/app", "v1", ["staging"])

    await c.delete_manifest("demo/app", digest)

    assert await c.tags("demo/app") == ["v2"]
    assert (await c.resolve("demo/app", "v2")).digest == keep
    with pytest.raises(ManifestNotFoundError, match=digest):
        await c.delete_manifest("demo/app", digest)


async def test_delete_by_tag_is_refused_before_sending(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """Registries delete only by digest, so a tag is a usage error that says to resolve it."""
    c = client_for(http, registry.host)

    with pytest.raises(UsageError, match="resolve the tag first"):
        await c.delete_manifest("demo/app", "v1")


async def test_delete_on_a_registry_without_deletes_points_to_the_packages_api(
    registry_without_delete: RunningRegistry, http: httpx.AsyncClient
) -> None:
    """A 405 on delete says deletes are disabled and where to delete instead (GHCR: Packages API)."""
    c = client_for(http, registry_without_delete.host)
    digest = await push_image(c, "demo/app", "v1")

    with pytest.raises(RegistryError) as caught:
        await c.delete_manifest("demo/app", digest)

    assert caught.value.status == 405
    assert "does not allow deletes" in str(caught.value)
    assert "GitHub Packages API" in str(caught.value)
    assert await c.tags("demo/app") == ["v1"]


async def test_push_blob_skips_blobs_the_repository_has(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """A blob already present is not uploaded again."""
    c = client_for(http, fault_proxy.host)
    data = b"layer bytes" * 1000

    first = await c.push_blob("demo/app", data)
    posts_before = [s for s in fault_proxy.seen if s[0] == "POST"]
    second = await c.push_blob("demo/app", data)

    assert first == second == sha256_digest(data)
    assert await c.blob_exists("demo/app", first)
    assert [s for s in fault_proxy.seen if s[0] == "POST"] == posts_before
    assert not await c.blob_exists("demo/app", sha256_digest(b"absent"))


async def test_mount_links_a_blob_from_another_repository(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """Mounting an existing blob returns True and the blob is then in the target repository."""
    c = client_for(http, registry.host)
    data = b"shared base layer"
    digest = await c.push_blob("demo/base", data)

    assert await c.mount_blob("demo/app", digest, "demo/base")
    assert await c.blob_exists("demo/app", digest)
    assert not await c.mount_blob("demo/app", sha256_digest(b"nowhere"), "demo/base")


async def test_resolve_without_digest_header_hashes_the_body(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """A registry that omits Docker-Content-Digest still resolves to the right digest."""
    c = client_for(http, fault_proxy.host)
    digest = await push_image(c, "demo/app", "v1")
    fault_proxy.strip_digest = True

    assert (await c.resolve("demo/app", "v1")).digest == digest


async def test_altered_manifest_bytes_are_detected(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """Bytes that do not hash to the claimed digest raise instead of being promoted."""
    c = client_for(http, fault_proxy.host)
    await push_image(c, "demo/app", "v1")
    fault_proxy.tamper_manifests = True

    with pytest.raises(RegistryError, match="altered the manifest"):
        await c.copy_tag("demo/app", "v1", ["prod"])


async def test_a_manifest_asked_by_digest_must_hash_to_that_digest(
    fault_proxy: FaultProxy, http: httpx.AsyncClient
) -> None:
    """A registry whose header agrees with altered bytes is still caught when we asked by digest."""
    c = client_for(http, fault_proxy.host)
    digest = await push_image(c, "demo/app", "v1")
    fault_proxy.tamper_manifests = fault_proxy.rehash = True

    with pytest.raises(RegistryError, match=f"not {digest}"):
        await c.get_manifest("demo/app", digest)


async def test_children_and_attestations_of_an_index(registry: RunningRegistry, http: httpx.AsyncClient) -> None:
    """children lists every entry; attestations maps each attestation to its platform image."""
    c = client_for(http, registry.host)
    digest, kids = await push_index(c, "demo/app", "multi", attestations=True)
    single = await push_image(c, "demo/app", "single")

    index = await c.get_manifest("demo/app", digest)

    assert children(index) == kids
    assert len(kids) == 4
    assert attestations(index) == {kids[2]: kids[0], kids[3]: kids[1]}
    assert children(await c.get_manifest("demo/app", single)) == []


async def test_reads_are_retried_on_5xx_and_429(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """A GET that meets 503 then 429 (Retry-After: 0) succeeds on the third attempt."""
    c = client_for(http, fault_proxy.host)
    digest = await push_image(c, "demo/app", "v1")
    fault_proxy.fail(503, methods="GET")
    fault_proxy.fail(429, methods="GET", headers={"Retry-After": "0"})

    manifest = await c.get_manifest("demo/app", "v1")

    assert manifest.digest == digest
    statuses = [status for method, path, status in fault_proxy.seen if method == "GET" and "/manifests/v1" in path]
    assert statuses == [503, 429, 200]


async def test_retries_stop_after_the_attempts(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """A registry that keeps failing gives one error after exactly the policy's attempts."""
    c = client_for(http, fault_proxy.host)
    fault_proxy.fail(502, times=10, methods="HEAD")

    with pytest.raises(RegistryError, match="kept failing") as caught:
        await c.resolve("demo/app", "v1")

    assert caught.value.status == 502
    assert len([s for s in fault_proxy.seen if s[0] == "HEAD"]) == FAST.attempts


async def test_a_retry_after_beyond_the_time_budget_is_not_waited_for(
    fault_proxy: FaultProxy, http: httpx.AsyncClient
) -> None:
    """A Retry-After longer than the policy's total time ends the retries at once."""
    c = client_for(http, fault_proxy.host)
    fault_proxy.fail(429, times=5, headers={"Retry-After": "3600"}, methods="GET")

    with pytest.raises(RegistryError, match="kept failing"):
        await c.tags("demo/app")

    assert len(fault_proxy.seen) == 1


async def test_writes_are_not_retried(fault_proxy: FaultProxy, http: httpx.AsyncClient) -> None:
    """A PUT that meets a 503 is reported, not repeated."""
    c = client_for(http, fault_proxy.host)
    await push_image(c, "demo/app", "v1")
    fault_proxy.fail(503, times=5, methods="PUT")

    with pytest.raises(RegistryError) as caught:
        await c.copy_tag("demo/app", "v1", ["prod"])

    assert caught.value.status == 503
    assert len([s for s in fault_proxy.seen if s[0] == "PUT" and s[2] == 503]) == 1


async def test_an_unreachable_registry_is_reported_by_host(http: httpx.AsyncClient) -> None:
    """Connection refused on every attempt ends in one RegistryError naming the host."""
    with serve_asgi(Starlette()) as url:
        host = url.removeprefix("http://")
    c = client_for(http, host)  # the server is gone: its port now refuses connections

    with pytest.raises(RegistryError, match=f"could not reach registry {host}"):
        await c.tags("demo/app")


def test_invalid_names_and_tags_are_usage_errors() -> None:
    """Upper-case repositories and malformed tags are refused with the rule to follow."""
    c = RegistryClient(httpx.AsyncClient(), registry="127.0.0.1:1")

    with pytest.raises(UsageError, match="lowercase"):
        c._url("Bizoholic/App", "tags", "list")
    with pytest.raises(UsageError, match="neither a tag nor a sha256 digest"):
        c._url("demo/app", "manifests", "-bad")
    with pytest.raises(UsageError, match="not a blob digest"):
        c._url("demo/app", "blobs", "../../etc")
    with pytest.raises(UsageError, match="without a scheme"):
        RegistryClient(httpx.AsyncClient(), registry="https://ghcr.io")


def test_loopback_hosts_use_http_and_others_https() -> None:
    """Only this machine is reached over plain http unless a scheme is forced."""
    assert is_loopback_host("127.0.0.1:5000")
    assert is_loopback_host("localhost")
    assert is_loopback_host("[::1]:5000")
    assert not is_loopback_host("ghcr.io")
    assert not is_loopback_host("10.0.0.1:5000")
    assert str(RegistryClient(httpx.AsyncClient(), registry="ghcr.io")._base) == "https://ghcr.io/v2/"
    assert str(RegistryClient(httpx.AsyncClient(), registry="127.0.0.1:5055")._base) == "http://127.0.0.1:5055/v2/"
    forced = RegistryClient(httpx.AsyncClient(), registry="registry.local:5000", scheme="http")
    assert str(forced._base) == "http://registry.local:5000/v2/"


# ---- token auth ------------------------------------------------------------------------


async def test_bearer_flow_uses_repository_scopes_and_caches_tokens(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """Pushing and reading go through the token service once per scope, with our repo's scopes."""
    tokens = registry_with_token_auth.tokens
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)

    digest = await push_image(c, "demo/app", "v1")
    await c.copy_tag("demo/app", "v1", ["staging"])
    assert (await c.resolve("demo/app", "staging")).digest == digest
    assert await c.tags("demo/app") == ["staging", "v1"]

    assert tokens.requests == [
        (TOKEN_USER, "test-registry", ["repository:demo/app:pull"]),
        (TOKEN_USER, "test-registry", ["repository:demo/app:push,pull"]),
    ]


async def test_mount_asks_for_push_on_the_target_first(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """A cross-repository mount requests push on the target, then pull on the source."""
    tokens = registry_with_token_auth.tokens
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)
    digest = await c.push_blob("demo/base", b"base layer")

    assert await c.mount_blob("demo/app", digest, "demo/base")
    assert tokens.requests[-1][2] == ["repository:demo/app:push,pull", "repository:demo/base:pull"]


async def test_a_stale_token_is_dropped_and_fetched_again_once(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """A 401 while holding a token leads to one fresh token, and the request then succeeds."""
    tokens = registry_with_token_auth.tokens
    tokens.expired_tokens = 1
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)

    await push_image(c, "demo/app", "v1")

    push_scope = [r for r in tokens.requests if r[2] == ["repository:demo/app:push,pull"]]
    pull_scope = [r for r in tokens.requests if r[2] == ["repository:demo/app:pull"]]
    assert len(pull_scope) == 2  # the first (expired) token, then a fresh one
    assert len(push_scope) == 1


async def test_tokens_that_never_work_end_in_an_auth_error(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """If the fresh token is refused too, the client stops after one redo."""
    tokens = registry_with_token_auth.tokens
    tokens.expired_tokens = 100
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)

    with pytest.raises(RegistryAuthError, match="refused the credentials"):
        await c.tags("demo/app")
    assert len(tokens.requests) == 2


async def test_a_wrong_password_is_an_auth_error_without_the_secret(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """The token service's refusal names the registry and user and never shows the password."""
    secret = "wrong-password-Zq81"
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, secret)

    with pytest.raises(RegistryAuthError) as caught:
        await c.tags("demo/app")

    message = str(caught.value)
    assert registry_with_token_auth.host in message
    assert f"user '{TOKEN_USER}'" in message
    assert "--registry-user" in message
    for text in (message, repr(caught.value), repr(c), caught.value.url):
        assert secret not in text
        assert TOKEN_PASSWORD not in text


async def test_missing_push_scope_is_a_permission_error(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """A user granted only pull gets RegistryPermissionError (insufficient_scope) on push."""
    pusher = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)
    await push_image(pusher, "demo/app", "v1")
    reader = client_for(http, registry_with_token_auth.host, READER_USER, READER_PASSWORD)

    assert await reader.tags("demo/app") == ["v1"]
    with pytest.raises(RegistryPermissionError, match="write:packages"):
        await reader.copy_tag("demo/app", "v1", ["prod"])
    with pytest.raises(RegistryPermissionError):
        await reader.check_push_access("demo/app")


async def test_check_push_access_passes_for_a_pusher(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """The doctor's push check succeeds with push rights and leaves no tag behind."""
    c = client_for(http, registry_with_token_auth.host, TOKEN_USER, TOKEN_PASSWORD)

    await c.check_push_access("demo/new-service")

    assert ["repository:demo/new-service:push,pull"] in [r[2] for r in registry_with_token_auth.tokens.requests]
    with pytest.raises(ManifestNotFoundError):
        await c.tags("demo/new-service")


async def test_anonymous_access_to_a_token_registry_asks_for_credentials(
    registry_with_token_auth: TokenAuthRegistry, http: httpx.AsyncClient
) -> None:
    """Without credentials the error says which flags to pass."""
    c = client_for(http, registry_with_token_auth.host)

    with pytest.raises(RegistryAuthError, match="needs credentials"):
        await c.tags("demo/app")


async def test_a_realm_on_another_host_gets_no_credentials(http: httpx.AsyncClient) -> None:
    """A challenge pointing at a foreign token service is refused before anything is sent there."""

    async def challenge(request: Request) -> JSONResponse:
        headers = {"www-authenticate": 'Bearer realm="https://tokens.example.net/token",service="x"'}
        return JSONResponse({"errors": [{"code": "UNAUTHORIZED"}]}, status_code=401, headers=headers)

    app = Starlette(routes=[Route("/{path:path}", challenge)])
    with serve_asgi(app) as url:
        c = client_for(http, url.removeprefix("http://"), "user", "s3cret-value")
        with pytest.raises(RegistryAuthError, match=r"tokens\.example\.net") as caught:
            await c.tags("demo/app")
    assert "s3cret-value" not in str(caught.value)


async def test_an_upload_sent_to_another_port_gets_no_credentials(http: httpx.AsyncClient) -> None:
    """Same host, other port is another origin: the blob goes there without our Authorization."""
    seen: list[str | None] = []

    async def storage(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({}, status_code=201)

    with serve_asgi(Starlette(routes=[Route("/upload", storage, methods=["PUT"])])) as elsewhere:

        async def registry(request: Request) -> JSONResponse:
            if request.headers.get("authorization") is None:
                challenge = {"www-authenticate": 'Basic realm="registry"'}
                return JSONResponse({"errors": [{"code": "UNAUTHORIZED"}]}, status_code=401, headers=challenge)
            if request.method == "HEAD":
                return JSONResponse({}, status_code=404)
            return JSONResponse({}, status_code=202, headers={"location": f"{elsewhere}/upload?_state=s"})

        routes = [Route("/{path:path}", registry, methods=["HEAD", "POST"])]
        with serve_asgi(Starlette(routes=routes)) as url:
            c = client_for(http, url.removeprefix("http://"), "user", "s3cret-value")
            await c.push_blob("demo/app", b"layer bytes")
    assert seen == [None]


# ---- Basic auth ------------------------------------------------------------------------


async def test_basic_auth_registry_works_with_credentials(
    registry_with_basic_auth: RunningRegistry, http: httpx.AsyncClient
) -> None:
    """An htpasswd registry's Basic challenge is answered, and wrong or missing credentials explain themselves."""
    good = client_for(http, registry_with_basic_auth.host, BASIC_USER, BASIC_PASSWORD)
    digest = await push_image(good, "demo/app", "v1")
    await good.check_push_access("demo/app")
    assert (await good.resolve("demo/app", "v1")).digest == digest

    bad = client_for(http, registry_with_basic_auth.host, BASIC_USER, "not-the-password")
    with pytest.raises(RegistryAuthError, match="refused the credentials") as caught:
        await bad.tags("demo/app")
    assert "not-the-password" not in str(caught.value)
    assert f"check that {registry_with_basic_auth.host}/demo/app is the right image" in str(caught.value)

    anonymous = client_for(http, registry_with_basic_auth.host)
    with pytest.raises(RegistryAuthError, match="needs credentials"):
        await anonymous.tags("demo/app")
