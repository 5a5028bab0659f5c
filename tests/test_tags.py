"""Tags: branch sanitising, the dirty marker, de-duplication, content tags, and the OCI tag grammar."""

from __future__ import annotations

import re

import pytest

from pipeline import tags
from tests.support.sources import SHA

# The OCI distribution spec's tag grammar, written out here rather than imported.
OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

REAL_TEMPLATES = [
    ("staging", "staging", "staging-{sha}", "{branch}-{sha}"),
    ("production", "latest", "{branch}-{sha}"),
]


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        pytest.param("feature/Login", "feature-login", id="slash-and-upper-case"),
        pytest.param("main", "main", id="plain"),
        pytest.param("release/v1.2.3", "release-v1.2.3", id="dots-kept"),
        pytest.param("..hidden", "hidden", id="leading-dots"),
        pytest.param("--x--", "x", id="leading-and-trailing-dashes"),
        pytest.param("_private", "_private", id="leading-underscore-is-valid"),
        pytest.param("fix/ümlaut ß", "fix-mlaut", id="non-ascii"),
        pytest.param("a//b@@c", "a-b-c", id="runs-collapse"),
        pytest.param("///", "detached", id="nothing-left"),
        pytest.param("", "detached", id="empty"),
        pytest.param("x" * 300, "x" * 100, id="long-truncated"),
        pytest.param("y" * 99 + "/zzz", "y" * 99, id="truncation-does-not-end-in-a-dash"),
    ],
)
def test_sanitize_branch(branch: str, expected: str) -> None:
    """A branch becomes a lower-case tag fragment without '/', leading or trailing separators, at most 100 long."""
    assert tags.sanitize_branch(branch) == expected


@pytest.mark.parametrize(
    ("dirty", "expected"),
    [pytest.param(False, "0123456", id="clean"), pytest.param(True, "0123456-dirty", id="dirty")],
)
def test_short_sha_marks_a_dirty_tree(dirty: bool, expected: str) -> None:
    """The short sha is 7 characters, with -dirty for uncommitted changes."""
    assert tags.short_sha(SHA, dirty=dirty) == expected


@pytest.mark.parametrize(
    ("templates", "branch", "environment", "dirty", "expected"),
    [
        pytest.param(
            ("staging", "staging-{sha}", "{branch}-{sha}"),
            "staging",
            "staging",
            False,
            ["staging", "staging-0123456"],
            id="identical-tags-once",
        ),
        pytest.param(
            ("latest", "{branch}-{sha}"), "main", "production", False, ["latest", "main-0123456"], id="production"
        ),
        pytest.param(
            ("{environment}-{sha}", "{branch}-{sha}"),
            "feature/Login",
            "preview",
            True,
            ["preview-0123456-dirty", "feature-login-0123456-dirty"],
            id="dirty-and-sanitised",
        ),
        pytest.param(("{sha}", "{sha}"), "main", "production", False, ["0123456"], id="duplicate-templates"),
    ],
)
def test_render(templates: tuple[str, ...], branch: str, environment: str, dirty: bool, expected: list[str]) -> None:
    """Templates render in order with the short sha, sanitised branch and environment, without duplicates."""
    assert tags.render(templates, sha=SHA, branch=branch, environment=environment, dirty=dirty) == expected


ODD_BRANCHES = [
    "feature/Login",
    "-leading",
    ".leading",
    "_under",
    "UPPER/CASE/Branch",
    "x" * 500,
    "/" * 40,
    "a" + "/" * 200 + "b",
    "dependabot/npm_and_yarn/next-14.2.3",
    "release/2024.01",
    "emoji-🚀-branch",
    "spaces in name",
    "tab\tand\nnewline",
    "refs/heads/main",
    "123",
    "-.-._-",
    "ñandú/ütf8",
    "a" * 99 + "-" * 10 + "b",
    "#42",
    "",
]


def test_every_rendered_tag_matches_the_oci_grammar() -> None:
    """Over many odd branch names, dirty or not, every tag the accepted templates render is a valid OCI tag."""
    templates = [
        *[t for _, *ts in REAL_TEMPLATES for t in ts],
        "{environment}-{branch}-{sha}",
        "{branch}",
        "{sha}",
        "build_{sha}.{branch}",
    ]
    for template in templates:
        assert tags.check_template(template, environment="production") == "", template
    rendered = [
        tag
        for branch in ODD_BRANCHES
        for dirty in (False, True)
        for tag in tags.render(tuple(templates), sha=SHA, branch=branch, environment="production", dirty=dirty)
    ]
    assert len(rendered) > len(ODD_BRANCHES) * len(templates)
    assert [t for t in rendered if not OCI_TAG.fullmatch(t)] == []
    assert all(tags.TAG.match(t) for t in rendered)


def test_check_template_uses_the_environment_for_the_length() -> None:
    """A long environment name can push an accepted template past 128 characters, and is caught."""
    template = "{environment}-{branch}-{sha}"
    assert tags.check_template(template, environment="staging") == ""
    assert tags.check_template(template, environment="e" * 20) == (
        "'{environment}-{branch}-{sha}' renders to 135 characters for a long branch name; "
        "tags are at most 128: use {branch} once and keep the rest short"
    )


@pytest.mark.parametrize(
    ("template", "moving"),
    [
        pytest.param("{sha}", False, id="sha-only"),
        pytest.param("{branch}-{sha}", False, id="branch-sha"),
        pytest.param("latest", True, id="latest"),
        pytest.param("{branch}", True, id="branch"),
    ],
)
def test_is_moving(template: str, moving: bool) -> None:
    """Only templates without {sha} are moving tags."""
    assert tags.is_moving(template) is moving


def test_content_tag_is_src_and_twelve_hex() -> None:
    """The content tag is 'src-' and the first 12 hex of the key, a valid tag."""
    key = "ab" * 32
    assert tags.content_tag(key) == "src-abababababab"
    assert OCI_TAG.fullmatch(tags.content_tag(key))


def test_pinned_reference() -> None:
    """A pinned reference is image@digest."""
    digest = "sha256:" + "0" * 64
    assert tags.pinned("ghcr.io/acme/api", digest) == f"ghcr.io/acme/api@{digest}"
    assert tags.DIGEST.match(digest)
