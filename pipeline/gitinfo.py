"""Which commit and branch a run is for.

The answer comes from explicit arguments first, then the ``GITHUB_*`` variables
Actions sets, then ``git`` in the source directory. A dirty tree is marked as
such (the short sha gets ``-dirty``), so an image built from uncommitted changes
is never passed off as the commit.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import GitError, UsageError

_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_GIT_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class GitContext:
    """The commit a run builds, where it came from, and whether the tree was clean."""

    branch: str
    sha: str
    event: str = "push"
    dirty: bool = False
    origin: str = "arguments"


def resolve(
    source: Path | None,
    *,
    branch: str = "",
    sha: str = "",
    event: str = "",
    env: Mapping[str, str] | None = None,
) -> GitContext:
    """The git context from arguments, else Actions variables, else git itself."""
    env = os.environ if env is None else env
    if sha and not _SHA.match(sha.lower()):
        raise UsageError(f"--sha {sha!r} is not a commit hash (7 to 40 hex digits)")
    if sha and branch:
        return GitContext(branch=branch, sha=sha.lower(), event=event or "push", origin="arguments")
    if env.get("GITHUB_SHA") and env.get("GITHUB_REF_NAME"):
        if not sha and not _SHA.match(env["GITHUB_SHA"].lower()):
            raise UsageError(f"GITHUB_SHA {env['GITHUB_SHA']!r} is not a commit hash: unset it or pass --sha")
        # A pull request's GITHUB_REF_NAME is "<n>/merge"; the head branch is what people recognise.
        github_branch = env.get("GITHUB_HEAD_REF") or env["GITHUB_REF_NAME"]
        return GitContext(
            branch=branch or github_branch,
            sha=(sha or env["GITHUB_SHA"]).lower(),
            event=event or env.get("GITHUB_EVENT_NAME", "push"),
            origin="GITHUB_* variables",
        )
    if source is None:
        raise GitError("cannot tell the commit: pass --sha and --branch")
    head = sha or _git(source, "rev-parse", "HEAD")
    current = branch or _git(source, "rev-parse", "--abbrev-ref", "HEAD")
    if current == "HEAD":
        raise GitError(f"{source} is on a detached HEAD: pass --branch to say which branch this build is for")
    dirty = not sha and bool(_git(source, "status", "--porcelain", "--untracked-files=normal"))
    return GitContext(branch=current, sha=head.lower(), event=event or "local", dirty=dirty, origin="git")


def _git(source: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(source), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed: pass --sha and --branch instead") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} in {source} took over {_GIT_TIMEOUT_S}s") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise GitError(f"cannot read the commit of {source} ({reason}): pass --sha and --branch")
    return done.stdout.strip()
