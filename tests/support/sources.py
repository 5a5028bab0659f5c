"""Fake monorepos for the foundation tests: services.toml, contexts, Dockerfiles, real git.

``base_config()`` is a small but complete services.toml as plain data (two
services, two groups, two environments); tests change one thing in it and write
it with ``to_toml``. ``write_sources`` lays out the contexts and Dockerfiles the
config names, and ``init_repo`` turns a directory into a real git repository
with one commit, using the ``git`` CLI with the user's configuration shut out.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_CONFIG = REPO_ROOT / "services.toml"
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python") if (REPO_ROOT / ".venv").is_dir() else sys.executable

SHA = "0123456789abcdef0123456789abcdef01234567"

_BASE: dict[str, Any] = {
    "registry": {"host": "127.0.0.1:5000", "namespace": "acme", "image_prefix": "shop-"},
    "project": {"source_url": "https://example.test/acme/shop"},
    "dokploy": {"url": "http://127.0.0.1:3000"},
    "environments": {
        "staging": {"branch": "staging", "tags": ["staging", "staging-{sha}", "{branch}-{sha}"]},
        "production": {"branch": "main", "tags": ["latest", "{branch}-{sha}"]},
    },
    "services": {
        "api": {
            "context": "services/api",
            "target": "runtime",
            "build_args": {"PYTHON_VERSION": "3.12"},
            "smoke": {"port": 8001, "path": "/health"},
            "test": {
                "stage": "test",
                "reports": "/reports",
                "services": [{"name": "db", "image": "postgres:16", "port": 5432}],
            },
        },
        "web": {"context": "apps/web", "dockerfile": "Dockerfile.production"},
    },
    "groups": [
        {
            "name": "backend",
            "services": ["api"],
            "targets": {
                "staging": {
                    "compose_id": "backendCompose01",
                    "compose_file": "compose/backend.yml",
                    "health": [{"name": "api", "url": "http://127.0.0.1:8001/health"}],
                }
            },
        },
        {"name": "frontend", "services": ["web"], "targets": {"staging": {"application_id": "frontendApp01"}}},
    ],
    "notify": {"on": ["failure"]},
}


def base_config() -> dict[str, Any]:
    """A fresh copy of the valid base config, safe to change."""
    return copy.deepcopy(_BASE)


def to_toml(data: dict[str, Any]) -> str:
    """``data`` as TOML text: one ``key = <inline value>`` line per top-level key."""
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in data.items())


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, "nan" if value != value else repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_config(root: Path, data: dict[str, Any] | None = None, name: str = "services.toml") -> Path:
    """Write ``data`` (default: the base config) as ``root/name``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(to_toml(base_config() if data is None else data), encoding="utf-8")
    return path


def dockerfile_text(stages: list[str]) -> str:
    """A Dockerfile declaring ``stages`` in order (it is read, never built)."""
    lines = ["FROM --platform=$BUILDPLATFORM python:3.12-slim AS base", "COPY . /app"]
    lines += [f"FROM base AS {stage}" for stage in stages]
    return "\n".join(lines) + "\n"


def write_sources(root: Path, data: dict[str, Any] | None = None) -> None:
    """For each service of ``data``: its context, a Dockerfile with the named stages, and one source file."""
    data = base_config() if data is None else data
    for name, service in data["services"].items():
        context = root / service["context"]
        context.mkdir(parents=True, exist_ok=True)
        stages = [s for s in (service.get("target"), service.get("test", {}).get("stage")) if s]
        (context / service.get("dockerfile", "Dockerfile")).write_text(dockerfile_text(stages), encoding="utf-8")
        (context / "main.py").write_text(f"print('{name}')\n", encoding="utf-8")


def monorepo(root: Path, data: dict[str, Any] | None = None) -> Path:
    """services.toml plus the contexts it names, under ``root``; returns the config path."""
    data = base_config() if data is None else data
    write_sources(root, data)
    return write_config(root, data)


def git_env() -> dict[str, str]:
    """The environment git runs in: no user or system config, a fixed identity, no GITHUB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GIT_"))}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.test",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.test",
    )
    return env


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=git_env(), check=True, timeout=30
    )
    return done.stdout.strip()


def init_repo(repo: Path, branch: str = "staging") -> str:
    """Make ``repo`` a git repository on ``branch`` with everything in it committed; the commit's sha."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", branch)
    if not any(p.name != ".git" for p in repo.iterdir()):
        (repo / "README.md").write_text("fake monorepo\n", encoding="utf-8")
    return commit_all(repo, "initial")


def commit_all(repo: Path, message: str = "change") -> str:
    """Commit every change in ``repo``; the new commit's sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")
