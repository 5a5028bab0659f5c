"""``python -m pipeline plan``: exit codes, one ``error:`` line, never a traceback, no network.

The cases marked ``process`` run as real ``python -m pipeline`` subprocesses,
all started at once by the module's fixture (importing the package costs over a
second per process); the others run the same ``main`` in this process, with
their own working directory and environment, while those start.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import cli
from tests.support.sources import PYTHON, REAL_CONFIG, SHA, git, git_env, init_repo, monorepo

SEVEN = (
    "brain-gateway, bizoholic-frontend, coreldove-frontend, client-portal, admin-dashboard, "
    "business-directory, thrillring-gaming"
)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    """One command line: how to build its arguments from the prepared trees, and the expected exit code."""

    id: str
    argv: Callable[[dict[str, Path]], list[str]]
    code: int
    cwd: str = "empty"
    process: bool = False


def real(*extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda _: ["--config", str(REAL_CONFIG), *extra]


def fake(*extra: str, tree: str = "tree") -> Callable[[dict[str, Path]], list[str]]:
    return lambda trees: ["--source", str(trees[tree]), *extra]


CASES = [
    Case("table-staging", real("--branch", "staging", "--sha", SHA), 0, process=True),
    Case("json-main", real("--branch", "main", "--sha", SHA, "--format", "json"), 0, process=True),
    Case("offline", fake("--branch", "staging", "--sha", SHA, "--offline"), 0, process=True),
    Case("no-registry-token", fake("--branch", "staging", "--sha", SHA, "--format", "json"), 0),
    Case(
        "no-token-in-named-variable",
        fake("--branch", "staging", "--sha", SHA, "--registry-token-env", "PIPELINE_NO_SUCH_TOKEN"),
        0,
    ),
    Case("dirty-git-tree", fake("--offline", "--format", "json", tree="repo"), 0),
    Case("bad-format", real("--branch", "staging", "--sha", SHA, "--format", "xml"), 2, process=True),
    Case(
        "unknown-service",
        real("--branch", "staging", "--sha", SHA, "--services", "brain-gateway,nope"),
        2,
        process=True,
    ),
    Case("unknown-environment", real("--branch", "staging", "--sha", SHA, "--environment", "qa"), 2),
    Case("branch-without-environment", real("--branch", "feature/x", "--sha", SHA), 2),
    Case("bad-sha", real("--branch", "staging", "--sha", "not-a-sha"), 2),
    Case("missing-config", lambda trees: ["--config", str(trees["empty"] / "nope.toml")], 2),
    Case("not-a-repository", real(), 2),
    Case("source-without-dockerfile", fake("--branch", "staging", "--sha", SHA, tree="broken"), 2),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Prepare the trees, start every case's process at once, and collect what each printed."""
    base = tmp_path_factory.mktemp("cli")
    trees = {name: base / name for name in ("tree", "repo", "broken", "empty")}
    monorepo(trees["tree"])
    monorepo(trees["repo"])
    init_repo(trees["repo"], branch="staging")
    (trees["repo"] / "services/api/main.py").write_text("print('edited')\n")
    monorepo(trees["broken"])
    (trees["broken"] / "services/api/Dockerfile").unlink()
    trees["empty"].mkdir()
    env = {**git_env(), "GIT_CEILING_DIRECTORIES": str(base)}
    assert not any(k.startswith("GITHUB_") for k in env)
    procs = {
        case.id: subprocess.Popen(
            [PYTHON, "-m", "pipeline", "plan", *case.argv(trees)],
            cwd=trees[case.cwd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case in CASES
        if case.process
    }
    results = {case.id: _in_process(case.argv(trees), trees[case.cwd], env) for case in CASES if not case.process}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = Run(proc.returncode, out, err)
    results["repo-sha"] = Run(0, git(trees["repo"], "rev-parse", "HEAD"), "")
    return results


def _in_process(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """``main(["plan", *argv])`` in ``cwd`` with exactly ``env`` as the environment."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        for name in list(os.environ):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(["plan", *argv])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exit_code_and_streams(runs: dict[str, Run], case: Case) -> None:
    """Success prints the plan on stdout and nothing on stderr; an error is exit 2, one 'error:' line, no traceback."""
    run = runs[case.id]
    assert run.code == case.code, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    if case.code == 0:
        assert (run.stderr, bool(run.stdout.strip())) == ("", True)
    else:
        assert run.stdout == ""
        assert run.stderr.startswith("error: ")
        assert run.stderr.count("\n") == 1


def test_table_output(runs: dict[str, Run]) -> None:
    """The table names the environment, the sha and each of the seven services."""
    lines = runs["table-staging"].stdout.splitlines()
    assert lines[0] == "plan: staging from branch staging at 0123456 (push, from arguments)"
    assert len([line for line in lines if "ghcr.io/bizoholic-digital/bizosaas-" in line]) == 7


def test_json_output(runs: dict[str, Run]) -> None:
    """--format json is one JSON document with the environment, services and groups in deploy order."""
    data = json.loads(runs["json-main"].stdout)
    assert data["environment"] == "production"
    assert [s["tags"] for s in data["services"]] == [["latest", "main-0123456"]] * 7
    assert [g["name"] for g in data["groups"]] == ["backend", "frontend"]


@pytest.mark.parametrize(
    ("case", "action"),
    [
        pytest.param("offline", "build (not checked: --offline)", id="offline"),
        pytest.param("no-registry-token", "build (could not look: no registry token in $GITHUB_TOKEN)", id="no-token"),
        pytest.param(
            "no-token-in-named-variable",
            "build (could not look: no registry token in $PIPELINE_NO_SUCH_TOKEN)",
            id="named-variable",
        ),
    ],
)
def test_registry_is_not_asked_without_permission_or_token(runs: dict[str, Run], case: str, action: str) -> None:
    """--offline or a missing token gives every service a build action saying why, without any network."""
    output = runs[case].stdout
    if output.lstrip().startswith("{"):
        actions = [s["action"] for s in json.loads(output)["services"]]
    else:
        actions = [line.split("  ")[-1].strip() for line in output.splitlines() if line.startswith(("api ", "web "))]
    assert actions == [action, action]
    assert "src-" in output


def test_a_dirty_checkout_is_planned_with_dirty_tags(runs: dict[str, Run]) -> None:
    """With --source on a git checkout with an edit, the branch and sha come from git and tags carry -dirty."""
    data = json.loads(runs["dirty-git-tree"].stdout)
    sha = runs["repo-sha"].stdout
    assert data["git"] == {"branch": "staging", "sha": sha, "event": "local", "dirty": True, "from": "git"}
    assert data["services"][0]["tags"] == ["staging", f"staging-{sha[:7]}-dirty"]
    assert data["services"][0]["content_tag"].startswith("src-")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("unknown-service", f"error: unknown service nope; valid services: {SEVEN}\n", id="service"),
        pytest.param(
            "unknown-environment",
            f"error: unknown environment 'qa'; defined in {REAL_CONFIG}: staging, production\n",
            id="environment",
        ),
        pytest.param(
            "branch-without-environment",
            "error: branch 'feature/x' deploys to no environment (staging -> staging, main -> production); "
            "pass --environment to choose one, or --branch\n",
            id="branch",
        ),
        pytest.param("bad-sha", "error: --sha 'not-a-sha' is not a commit hash (7 to 40 hex digits)\n", id="sha"),
    ],
)
def test_usage_error_messages(runs: dict[str, Run], case: str, message: str) -> None:
    """Usage mistakes print exactly one message that says what is valid."""
    assert runs[case].stderr == message


def test_argparse_mistakes_point_at_help(runs: dict[str, Run]) -> None:
    """An invalid --format is argparse's one-line complaint plus where to find help."""
    stderr = runs["bad-format"].stderr
    assert stderr.startswith("error: argument --format: invalid choice: 'xml'")
    assert stderr.endswith("(see python -m pipeline plan --help)\n")


def test_config_and_git_errors_name_the_fix(runs: dict[str, Run]) -> None:
    """A missing config, a non-repository and a tree without a Dockerfile each say what to do."""
    missing = runs["missing-config"].stderr
    assert missing.endswith("nope.toml: file not found; pass --config with the path to services.toml\n")
    assert runs["not-a-repository"].stderr.startswith("error: cannot read the commit of . (")
    assert runs["not-a-repository"].stderr.endswith(": pass --sha and --branch\n")
    broken = runs["source-without-dockerfile"].stderr
    assert broken.startswith("error: ")
    assert "services.toml: services.api.dockerfile: 'services/api/Dockerfile' does not exist under the source" in broken
