"""The git context: explicit arguments, then GITHUB_* variables, then a real git repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import parse
from pipeline.errors import GitError, UsageError
from pipeline.gitinfo import GitContext, resolve
from pipeline.plan import make_plan
from tests.support.sources import SHA, base_config, git, init_repo, to_toml

OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.mark.parametrize(
    ("kwargs", "env", "expected"),
    [
        pytest.param(
            {"branch": "hotfix", "sha": SHA.upper()[:12]},
            {"GITHUB_SHA": OTHER_SHA, "GITHUB_REF_NAME": "staging"},
            GitContext(branch="hotfix", sha=SHA[:12], event="push", origin="arguments"),
            id="arguments-win-over-actions",
        ),
        pytest.param(
            {"branch": "hotfix", "sha": SHA, "event": "workflow_dispatch"},
            {},
            GitContext(branch="hotfix", sha=SHA, event="workflow_dispatch", origin="arguments"),
            id="arguments-with-event",
        ),
        pytest.param(
            {},
            {"GITHUB_SHA": OTHER_SHA, "GITHUB_REF_NAME": "staging", "GITHUB_EVENT_NAME": "push", "GITHUB_HEAD_REF": ""},
            GitContext(branch="staging", sha=OTHER_SHA, event="push", origin="GITHUB_* variables"),
            id="actions-push",
        ),
        pytest.param(
            {},
            {
                "GITHUB_SHA": OTHER_SHA.upper(),
                "GITHUB_REF_NAME": "42/merge",
                "GITHUB_HEAD_REF": "feature/login",
                "GITHUB_EVENT_NAME": "pull_request",
            },
            GitContext(branch="feature/login", sha=OTHER_SHA, event="pull_request", origin="GITHUB_* variables"),
            id="actions-pull-request-uses-head-ref",
        ),
        pytest.param(
            {"branch": "main"},
            {"GITHUB_SHA": OTHER_SHA, "GITHUB_REF_NAME": "staging"},
            GitContext(branch="main", sha=OTHER_SHA, event="push", origin="GITHUB_* variables"),
            id="branch-argument-with-actions-sha",
        ),
        pytest.param(
            {"sha": SHA},
            {"GITHUB_SHA": OTHER_SHA, "GITHUB_REF_NAME": "staging", "GITHUB_EVENT_NAME": "schedule"},
            GitContext(branch="staging", sha=SHA, event="schedule", origin="GITHUB_* variables"),
            id="sha-argument-with-actions-branch",
        ),
    ],
)
def test_resolve_without_git(kwargs: dict[str, str], env: dict[str, str], expected: GitContext) -> None:
    """Arguments win, then GITHUB_* variables; no git repository is needed for either."""
    assert resolve(None, env=env, **kwargs) == expected


def test_without_anything_to_go_on_it_asks_for_sha_and_branch() -> None:
    """No arguments, no Actions variables and no source: a GitError naming the flags."""
    with pytest.raises(GitError) as caught:
        resolve(None, env={})
    assert str(caught.value) == "cannot tell the commit: pass --sha and --branch"


@pytest.mark.parametrize(
    "sha",
    [
        pytest.param("xyz", id="not-hex"),
        pytest.param("abc123", id="too-short"),
        pytest.param("a" * 41, id="too-long"),
        pytest.param("ghijklm", id="letters-past-f"),
        pytest.param("main", id="a-branch-name"),
    ],
)
def test_a_bad_sha_is_a_usage_error(sha: str) -> None:
    """--sha must be 7 to 40 hex digits, and the message repeats what was given."""
    with pytest.raises(UsageError) as caught:
        resolve(None, sha=sha, branch="main", env={})
    assert str(caught.value) == f"--sha {sha!r} is not a commit hash (7 to 40 hex digits)"


def test_a_clean_repository_is_not_dirty(tmp_path: Path) -> None:
    """In a clean git checkout the branch and full sha come from git, and the tree is clean."""
    sha = init_repo(tmp_path, branch="staging")
    assert resolve(tmp_path, env={}) == GitContext(branch="staging", sha=sha, event="local", dirty=False, origin="git")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda repo: (repo / "README.md").write_text("edited\n"), id="modified-file"),
        pytest.param(lambda repo: (repo / "new.txt").write_text("new\n"), id="untracked-file"),
        pytest.param(lambda repo: (repo / "README.md").unlink(), id="deleted-file"),
    ],
)
def test_uncommitted_changes_make_the_tree_dirty_and_the_tags_say_so(
    tmp_path: Path, change: Callable[[Path], object]
) -> None:
    """A modified, new or deleted file marks the context dirty, and the plan's sha tags carry -dirty."""
    sha = init_repo(tmp_path, branch="staging")
    change(tmp_path)
    context = resolve(tmp_path, env={})
    assert (context.dirty, context.sha) == (True, sha)
    plan = make_plan(parse(to_toml(base_config())), context)
    assert plan.services[0].tags == ("staging", f"staging-{sha[:7]}-dirty")
    assert plan.services[0].labels["org.opencontainers.image.revision"] == f"{sha}-dirty"
    assert f"the tree at {sha[:7]} has uncommitted changes: tags carry '-dirty'" in plan.notes


def test_an_ignored_file_does_not_make_the_tree_dirty(tmp_path: Path) -> None:
    """A file git ignores is not an uncommitted change."""
    (tmp_path / ".gitignore").write_text("*.log\n")
    init_repo(tmp_path, branch="main")
    (tmp_path / "debug.log").write_text("noise\n")
    assert resolve(tmp_path, env={}).dirty is False


def test_a_detached_head_asks_for_the_branch(tmp_path: Path) -> None:
    """On a detached HEAD, git cannot name the branch: the error says to pass --branch."""
    sha = init_repo(tmp_path, branch="staging")
    git(tmp_path, "switch", "-q", "--detach", "HEAD")
    with pytest.raises(GitError) as caught:
        resolve(tmp_path, env={})
    assert str(caught.value) == (
        f"{tmp_path} is on a detached HEAD: pass --branch to say which branch this build is for"
    )
    assert resolve(tmp_path, branch="staging", env={}).sha == sha


def test_a_branch_argument_overrides_the_checked_out_branch(tmp_path: Path) -> None:
    """--branch alone keeps git's sha and dirtiness but names the branch."""
    sha = init_repo(tmp_path, branch="feature/x")
    (tmp_path / "README.md").write_text("edited\n")
    assert resolve(tmp_path, branch="main", env={}) == GitContext(
        branch="main", sha=sha, event="local", dirty=True, origin="git"
    )


def test_a_directory_that_is_not_a_repository_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside any git repository the error names the directory, git's reason, and --sha/--branch."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    source = tmp_path / "plain"
    source.mkdir()
    with pytest.raises(GitError) as caught:
        resolve(source, env={})
    message = str(caught.value)
    assert message.startswith(f"cannot read the commit of {source} (")
    assert "not a git repository" in message
    assert message.endswith("): pass --sha and --branch")


def test_a_repository_without_commits_says_how_to_fix_it(tmp_path: Path) -> None:
    """A fresh repository has no HEAD commit: a GitError, not a crash."""
    git(tmp_path, "init", "-q", "-b", "main")
    with pytest.raises(GitError, match=r"^cannot read the commit of .*: pass --sha and --branch$"):
        resolve(tmp_path, env={})


def test_a_github_sha_that_is_not_a_commit_is_refused():
    """GITHUB_SHA is checked like --sha, so a broken variable never names images."""
    with pytest.raises(UsageError) as caught:
        resolve(None, env={"GITHUB_SHA": "notasha", "GITHUB_REF_NAME": "staging"})
    assert str(caught.value) == "GITHUB_SHA 'notasha' is not a commit hash: unset it or pass --sha"
