"""GitHubPackages against the loopback GitHub Packages double."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from pipeline.errors import GitHubAPIError, MissingSecretError, UsageError
from pipeline.packages import GitHubPackages, _parse_version
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from tests.support.github_double import LAST_TAGGED, GitHubDouble
from tests.support.registry import loopback_http, serve_asgi

TOKEN = "test-classic-pat-for-the-double"  # a made-up value; never a real token shape
FAST = RetryPolicy(attempts=3, timeout_s=5.0, wait_initial_s=0.01, wait_max_s=0.05)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def packages_for(
    http: httpx.AsyncClient,
    github: GitHubDouble,
    *,
    token: str = TOKEN,
    owner: str = "bizoholic-digital",
    kind: str = "org",
) -> GitHubPackages:
    return GitHubPackages(
        http,
        token=SecretValue("GITHUB_TOKEN", token),
        owner=owner,
        owner_type=kind,  # type: ignore[arg-type]
        api_url=github.url,
        retry=FAST,
    )


async def test_list_versions_follows_every_page(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """250 versions come back from three pages of 100, with ids past 2**31 and tags intact."""
    github.add_token(TOKEN)
    ids = [github.push("bizoholic-digital", "app", digest(i), [f"v{i}"] if i % 2 else []) for i in range(250)]

    versions = await packages_for(http, github).list_versions("app")

    assert sorted(v.id for v in versions) == sorted(ids)
    assert min(v.id for v in versions) > 2**31
    by_digest = {v.digest: v for v in versions}
    assert by_digest[digest(7)].tags == ("v7",)
    assert by_digest[digest(8)].tags == ()
    assert by_digest[digest(8)].created_at.tzinfo is not None
    lists = [r for r in github.requests if r.method == "GET"]
    assert len(lists) == 3
    assert all("per_page=100" in r.query and "state=active" in r.query for r in lists)
    assert all(r.accept == "application/vnd.github+json" and r.api_version == "2022-11-28" for r in lists)


async def test_deleted_versions_are_not_listed(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """Only active versions are returned after a delete."""
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    doomed = github.push("bizoholic-digital", "app", digest(2), ["v2"])
    client = packages_for(http, github)

    assert await client.delete_version("app", doomed)

    assert [v.digest for v in await client.list_versions("app")] == [digest(1)]


async def test_user_owned_packages_use_the_authenticated_users_route(
    github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """owner_type user goes through /user/packages/...: /users/{owner} would show public packages only."""
    github.add_token(TOKEN, user="alice")
    github.push("alice", "tool", digest(1), ["latest"], kind="user")  # private, as GHCR images start
    github.push("alice", "tool", digest(2), ["old"], kind="user")
    client = packages_for(http, github, owner="alice", kind="user")

    versions = {v.digest: v for v in await client.list_versions("tool")}
    assert await client.delete_version("tool", versions[digest(2)].id)

    assert set(versions) == {digest(1), digest(2)}
    assert [r.path for r in github.requests] == [
        "/user",  # whose token this is, once
        "/user/packages/container/tool/versions",
        f"/user/packages/container/tool/versions/{versions[digest(2)].id}",
    ]


async def test_another_users_token_touches_nothing(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """/user acts for the token's owner: bob's token must not list (or prune) bob's 'tool' as alice's."""
    github.add_token(TOKEN, user="bob")
    github.push("alice", "tool", digest(1), ["latest"], kind="user")
    github.push("bob", "tool", digest(2), ["latest"], kind="user")
    client = packages_for(http, github, owner="Alice", kind="user")

    with pytest.raises(UsageError, match="the GitHub token belongs to 'bob', but the packages belong to user 'Alice'"):
        await client.list_versions("tool")
    with pytest.raises(UsageError):
        await client.delete_version("tool", 1)
    assert [r.path for r in github.requests] == ["/user", "/user"]


async def test_a_workflow_token_cannot_prune_user_owned_packages(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """GITHUB_TOKEN is no user: the error names the token that works, and nothing is listed."""
    github.add_token(TOKEN, kind="github_token", admin=True)
    github.push("alice", "tool", digest(1), ["latest"], kind="user")

    with pytest.raises(GitHubAPIError) as caught:
        await packages_for(http, github, owner="alice", kind="user").list_versions("tool")
    assert "Resource not accessible by integration" in str(caught.value)
    assert "alice's own classic personal access token" in str(caught.value)
    assert TOKEN not in str(caught.value)


async def test_package_names_with_a_slash_are_one_encoded_segment(
    github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """A package called repo/sub is requested as repo%2Fsub."""
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "repo/sub", digest(1), ["v1"])

    versions = await packages_for(http, github).list_versions("repo/sub")

    assert [v.digest for v in versions] == [digest(1)]
    assert "/packages/container/repo%2Fsub/versions" in github.requests[-1].path


async def test_delete_is_true_once_then_false_when_already_gone(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """The first delete answers 204 (True); a repeat gets 404, read as already deleted (False)."""
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    old = github.push("bizoholic-digital", "app", digest(2), ["v0"])
    client = packages_for(http, github)

    assert await client.delete_version("app", old) is True
    assert await client.delete_version("app", old) is False
    assert [v.name for v in github.active("bizoholic-digital", "app")] == [digest(1)]


async def test_the_last_tagged_version_cannot_be_deleted(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """GitHub's 400 for the last tagged version becomes an error that says what to do."""
    github.add_token(TOKEN)
    only = github.push("bizoholic-digital", "app", digest(1), ["v1"])

    with pytest.raises(GitHubAPIError) as caught:
        await packages_for(http, github).delete_version("app", only)

    assert caught.value.status == 400
    assert LAST_TAGGED in str(caught.value)
    assert "keep it, or delete the whole package" in str(caught.value)


async def test_a_refused_token_says_which_token_to_pass(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """401 names the package, GitHub's reason and the scopes needed, never the token."""
    bad = "ghp_notARealToken0987"
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    client = packages_for(http, github, token=bad)

    with pytest.raises(GitHubAPIError) as caught:
        await client.list_versions("app")

    message = str(caught.value)
    assert caught.value.status == 401
    assert "Bad credentials" in message
    assert "package 'app' of org bizoholic-digital" in message
    assert "read:packages and delete:packages" in message
    for text in (message, repr(caught.value), repr(client), caught.value.url):
        assert bad not in text


async def test_an_empty_token_is_refused_before_any_request(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """No token means no request: the error says which token to pass (GitHub would say 401)."""
    with pytest.raises(MissingSecretError, match="read:packages and delete:packages"):
        packages_for(http, github, token="")
    anonymous = await http.get(f"{github.url}/orgs/bizoholic-digital/packages/container/app/versions")
    assert (anonymous.status_code, anonymous.json()["message"]) == (401, "Requires authentication")


async def test_missing_read_scope_is_explained(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """A token without read:packages gets GitHub's 403 message and the scopes to add."""
    github.add_token(TOKEN, scopes=["repo"])
    github.push("bizoholic-digital", "app", digest(1), ["v1"])

    with pytest.raises(GitHubAPIError, match="read:packages scope") as caught:
        await packages_for(http, github).list_versions("app")
    assert caught.value.status == 403


async def test_missing_delete_scope_is_explained(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """Listing works without delete:packages, deleting is refused with the fix."""
    github.add_token(TOKEN, scopes=["read:packages"])
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    old = github.push("bizoholic-digital", "app", digest(2), ["v0"])
    client = packages_for(http, github)

    assert len(await client.list_versions("app")) == 2
    with pytest.raises(GitHubAPIError, match="delete:packages") as caught:
        await client.delete_version("app", old)
    assert caught.value.status == 403
    assert github.requests[-1].status == 403


async def test_a_workflow_token_without_admin_role_is_told_where_to_grant_it(
    github: GitHubDouble, http: httpx.AsyncClient
) -> None:
    """A GITHUB_TOKEN may list but not delete until the repo has the Admin role on the package."""
    github.add_token(TOKEN, kind="github_token")
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    old = github.push("bizoholic-digital", "app", digest(2), ["v0"])
    client = packages_for(http, github)

    assert len(await client.list_versions("app")) == 2
    with pytest.raises(GitHubAPIError, match="Manage Actions access"):
        await client.delete_version("app", old)

    github.add_token(TOKEN, kind="github_token", admin=True)
    assert await client.delete_version("app", old)


async def test_an_unknown_package_names_package_and_owner(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """404 says which package and owner were asked for, and what to check."""
    github.add_token(TOKEN)

    with pytest.raises(GitHubAPIError) as caught:
        await packages_for(http, github).list_versions("bizosaas-nothing")

    assert caught.value.status == 404
    assert "package 'bizosaas-nothing' of org bizoholic-digital" in str(caught.value)
    assert "Package not found." in str(caught.value)


@pytest.mark.parametrize(
    ("status", "retry_after", "remaining_zero"),
    [(429, 0, False), (403, 0, False), (403, None, True)],
    ids=["429-retry-after", "403-retry-after", "403-remaining-zero"],
)
async def test_rate_limits_are_waited_out_and_retried(
    github: GitHubDouble, http: httpx.AsyncClient, status: int, retry_after: int | None, remaining_zero: bool
) -> None:
    """A rate-limited answer is retried after the wait GitHub asks for."""
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    github.throttle(status, retry_after=retry_after, remaining_zero=remaining_zero, reset_in=0)

    versions = await packages_for(http, github).list_versions("app")

    assert [v.digest for v in versions] == [digest(1)]
    assert [r.status for r in github.requests] == [status, 200]


async def test_a_rate_limit_wait_beyond_the_budget_fails_at_once(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """If GitHub asks for an hour, the client reports it instead of waiting."""
    github.add_token(TOKEN)
    github.push("bizoholic-digital", "app", digest(1), ["v1"])
    github.throttle(429, retry_after=3600, times=5)

    with pytest.raises(GitHubAPIError, match="rate limit") as caught:
        await packages_for(http, github).list_versions("app")

    assert "3600s" in str(caught.value)
    assert len(github.requests) == 1


async def test_a_plain_403_is_not_retried(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """A permission 403 (no rate-limit headers) is final on the first answer."""
    github.add_token(TOKEN, scopes=[])
    github.push("bizoholic-digital", "app", digest(1), ["v1"])

    with pytest.raises(GitHubAPIError):
        await packages_for(http, github).list_versions("app")
    assert len(github.requests) == 1


async def test_an_unreachable_api_is_reported(http: httpx.AsyncClient) -> None:
    """Connection refused ends in one GitHubAPIError naming the URL."""
    double = GitHubDouble()
    with serve_asgi(double.app) as url:
        double.url = url
    client = packages_for(http, double)  # the server is gone: its port refuses connections

    with pytest.raises(GitHubAPIError, match="could not reach the GitHub API"):
        await client.list_versions("app")


def test_bad_owner_and_package_names_are_usage_errors() -> None:
    """An owner with a slash or an empty package name are refused with an example."""
    with pytest.raises(UsageError, match="bizoholic-digital"):
        GitHubPackages(httpx.AsyncClient(), token=SecretValue("T", "x"), owner="a/b", owner_type="org")
    client = GitHubPackages(httpx.AsyncClient(), token=SecretValue("T", "x"), owner="a", owner_type="org")
    with pytest.raises(UsageError, match="package name"):
        client._versions_url("")


def test_created_at_is_parsed_as_utc() -> None:
    """GitHub's Z timestamps become timezone-aware datetimes."""
    version = _parse_version(
        {"id": 1259730685, "name": digest(1), "created_at": "2020-05-19T22:19:11Z", "metadata": {}}, "u"
    )
    assert version.created_at == dt.datetime(2020, 5, 19, 22, 19, 11, tzinfo=dt.UTC)
    assert version.tags == ()


async def test_a_refused_token_on_a_user_route_says_so(github: GitHubDouble, http: httpx.AsyncClient) -> None:
    """A token GitHub does not know is refused before anything is listed, without showing the token."""
    github.push("alice", "tool", digest(1), ["latest"], kind="user")

    with pytest.raises(GitHubAPIError, match="GitHub refused the token") as caught:
        await packages_for(http, github, owner="alice", kind="user").list_versions("tool")
    assert "of alice with read:packages" in str(caught.value)
    assert TOKEN not in str(caught.value)
