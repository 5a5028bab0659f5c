"""The GitHub workflows: their shape (one dagger call, pinned, secrets by reference) and actionlint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
DEPLOY = WORKFLOWS / "deploy.yml"
CI = WORKFLOWS / "ci.yml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as the boolean True.
    data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def dagger_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in steps(workflow) if str(s.get("uses", "")).startswith("dagger/dagger-for-github@")]


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load(DEPLOY)


def test_deploy_runs_one_pinned_dagger_call(deploy):
    """deploy.yml has a checkout and exactly one dagger-for-github v8 step on CLI 0.21.11."""
    assert len(deploy["jobs"]) == 1
    uses = [s.get("uses", "") for s in steps(deploy)]
    assert uses[0].startswith("actions/checkout@v")
    [dagger] = dagger_steps(deploy)
    assert re.fullmatch(r"dagger/dagger-for-github@v8\.\d+\.\d+", dagger["uses"])
    assert dagger["with"]["version"] == "0.21.11"
    assert dagger["with"]["verb"] == "call"
    # Nothing else runs: all logic lives in the module.
    assert not [s for s in steps(deploy) if "run" in s]


def test_deploy_args_call_deploy_with_secrets_by_reference(deploy):
    """The args call `deploy` with every flag, passing secrets only as env:// references."""
    [dagger] = dagger_steps(deploy)
    args = dagger["with"]["args"].split()
    assert args[0] == "deploy"
    flags = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in args[1:]}
    assert flags == {
        "--branch": '"$GITHUB_REF_NAME"',
        "--sha": '"$GITHUB_SHA"',
        "--event": '"$GITHUB_EVENT_NAME"',
        "--run-url": '"$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"',
        "--environment": '"$DEPLOY_ENVIRONMENT"',
        "--services": '"$DEPLOY_SERVICES"',
        "--dry-run": '"$DEPLOY_DRY_RUN"',
        "--registry-user": '"$GITHUB_ACTOR"',
        "--registry-token": "env://GITHUB_TOKEN",
        "--dokploy-key": "env://DOKPLOY_API_KEY",
        "--notify-webhook": "env://SLACK_WEBHOOK_URL",
        "--summary-format": "markdown",
    }


def test_deploy_env_carries_secrets_and_inputs(deploy):
    """Secrets and dispatch inputs reach the step as environment variables, never inline."""
    [dagger] = dagger_steps(deploy)
    env = dagger["env"]
    assert env["GITHUB_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert env["DOKPLOY_API_KEY"] == "${{ secrets.DOKPLOY_API_KEY }}"
    assert env["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"
    assert "inputs.environment" in env["DEPLOY_ENVIRONMENT"]
    assert env["DEPLOY_SERVICES"] == "${{ inputs.services }}"
    assert env["DEPLOY_DRY_RUN"] == "${{ inputs.dry_run || false }}"
    assert "${{" not in dagger["with"]["args"]


def test_deploy_permissions_and_concurrency(deploy):
    """The token may read code and write packages only; deploys queue per environment, never cancel."""
    assert deploy["permissions"] == {"contents": "read", "packages": "write"}
    concurrency = deploy["concurrency"]
    assert concurrency["group"].startswith("deploy-${{")
    assert "inputs.environment" in concurrency["group"]
    assert "github.ref_name" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False


def test_deploy_triggers(deploy):
    """Pushes to main or staging that touch services or the pipeline, and manual dispatch, trigger it."""
    push = deploy["on"]["push"]
    assert push["branches"] == ["main", "staging"]
    assert set(push["paths"]) == {
        "bizosaas/**",
        "dokploy-*-ghcr.yml",
        ".github/workflows/**",
        "services.toml",
        "pipeline/**",
        "dagger.json",
        "pyproject.toml",
    }
    inputs = deploy["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"environment", "services", "dry_run"}
    assert inputs["environment"]["type"] == "choice"
    assert {"staging", "production"} <= set(inputs["environment"]["options"])
    assert inputs["environment"]["default"] in inputs["environment"]["options"]
    assert inputs["services"] == inputs["services"] | {"type": "string", "default": ""}
    assert inputs["dry_run"] == inputs["dry_run"] | {"type": "boolean", "default": False}


@pytest.mark.parametrize("path", [DEPLOY, CI], ids=["deploy", "ci"])
def test_no_secret_literals(path):
    """The workflows hold no tokens, keys or webhook URLs: only ${{ secrets.* }} references."""
    text = path.read_text()
    assert not re.search(r"\b(ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{10,}", text)
    assert "hooks.slack.com" not in text
    assert "x-api-key" not in text.lower()
    # Long opaque strings (API keys, ids) have no place here.
    assert not re.search(r"[A-Za-z0-9+/_-]{32,}", text)
    for reference in re.findall(r"secrets\.[A-Za-z_]+", text):
        assert f"${{{{ {reference} }}}}" in text


def test_ci_runs_make_test_and_lint_with_real_parts():
    """ci.yml installs docker-registry and actionlint, then runs `make test` and `make lint`."""
    ci = load(CI)
    assert "pull_request" in ci["on"]
    runs = [s["run"] for s in steps(ci) if "run" in s]
    assert "make test" in runs
    assert "make lint" in runs
    assert runs.index("make test") < runs.index("make lint")
    assert any("docker-registry" in run for run in runs)
    assert "bash .ci/install-actionlint" in runs
    setup_python = [s for s in steps(ci) if str(s.get("uses", "")).startswith("actions/setup-python@")]
    assert setup_python[0]["with"]["python-version"] == "3.11"


def find_actionlint() -> str:
    """actionlint on PATH or where `go install` puts it; skip the test if it is not installed."""
    dirs = []
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if os.access(go, os.X_OK):
        for variable in ("GOBIN", "GOPATH"):
            value = subprocess.run(
                [go, "env", variable], capture_output=True, text=True, check=False, timeout=60
            ).stdout.strip()
            if value:
                dirs.append(Path(value) if variable == "GOBIN" else Path(value.split(os.pathsep)[0]) / "bin")
    dirs.append(Path.home() / "go" / "bin")
    found = shutil.which("actionlint") or shutil.which("actionlint", path=os.pathsep.join(map(str, dirs)))
    if not found:
        pytest.skip("actionlint not installed: run .ci/install-actionlint")
    return found


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_actionlint(), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_actionlint_accepts_both_workflows():
    """actionlint finds nothing wrong in deploy.yml and ci.yml."""
    result = actionlint(DEPLOY, CI)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """actionlint really fails on a bad workflow, so the check above can fail."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  deploy:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        run: echo ${{ github.no_such_property }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'broken.yml:6:9: unexpected key "uses" for step to run shell command' in result.stdout
    assert 'broken.yml:7:23: property "no_such_property" is not defined' in result.stdout
