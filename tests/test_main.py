"""Tests for pipeline.main: the module loads and registers the way the Dagger runtime does it.

The runtime finds the main object through the ``dagger.mod`` entry point, then
builds every type definition with the SDK's own ``Module._typedefs`` and sends
them to the engine in one query. Here that query is built for real and, instead
of being sent, is captured by answering the SDK's one network call. It runs in a
subprocess because the SDK reads DAGGER_MAIN_OBJECT when it is imported, as it
is in the runtime container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REGISTER = r"""
import json, anyio
from dagger.client._core import Context
from dagger.client.base import Type
from dagger.mod import cli

captured = []

def expand(value):
    if isinstance(value, Type):
        return [[f.name, {k: expand(v) for k, v in f.args.items()}] for f in value._ctx.selections]
    if isinstance(value, list):
        return [expand(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return getattr(value, "value")
    return value

async def execute(ctx, return_type=None):
    captured.extend([f.name, {k: expand(v) for k, v in f.args.items()}] for f in ctx.selections)
    return "module-id"

Context.execute = execute
entry = cli.get_entry_point()
module = cli.load_module()
result = anyio.run(module._typedefs)
print(json.dumps({"entry_point": entry.value, "result": result, "query": captured}))
"""


@pytest.fixture(scope="module")
def registration() -> dict[str, Any]:
    """The type definitions the runtime would register, captured from the SDK itself."""
    env = {**os.environ, "DAGGER_MAIN_OBJECT": "Pipeline", "DAGGER_MODULE": "pipeline"}
    done = subprocess.run(
        [sys.executable, "-c", REGISTER], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def main_object(registration: dict[str, Any]) -> list[Any]:
    """The selections that define the Pipeline object type."""
    (definition,) = [args["object"] for name, args in registration["query"] if name == "withObject"]
    return definition


def functions(registration: dict[str, Any]) -> dict[str, list[Any]]:
    """Each registered function's selections: name -> [function, withArg..., withCachePolicy...]."""
    return {
        args["function"][0][1]["name"]: args["function"]
        for name, args in main_object(registration)
        if name == "withFunction"
    }


def arguments(steps: list[Any]) -> dict[str, dict[str, Any]]:
    """A function's arguments by name, with their type definition and default path."""
    return {args["name"]: args for name, args in steps if name == "withArg"}


def test_the_main_object_is_found_through_the_entry_point(registration):
    """The runtime's entry-point lookup resolves pipeline.main:Pipeline and registers it."""
    assert registration["entry_point"] == "pipeline.main:Pipeline"
    assert registration["result"] == "module-id"
    assert ["withObject", {"name": "Pipeline", "description": "Build, publish and deploy the BizOSaaS services."}] in (
        main_object(registration)
    )


def test_every_function_registers(registration):
    """All the functions a user calls are part of the module's API."""
    assert set(functions(registration)) == {
        "plan",
        "build",
        "build_all",
        "test",
        "test_reports",
        "publish",
        "deploy",
        "promote",
        "prune",
        "doctor",
        "status",
    }


@pytest.mark.parametrize("name", ["test", "test_reports", "publish", "deploy", "promote", "prune", "doctor", "status"])
def test_functions_with_side_effects_are_never_cached(registration, name):
    """A cached deploy would be a cache hit that publishes and deploys nothing."""
    policies = [args for step, args in functions(registration)[name] if step == "withCachePolicy"]
    assert policies == [{"policy": "Never"}]


def test_plan_and_build_keep_the_default_cache(registration):
    """Pure functions of their inputs may be cached; only side effects must not be."""
    for name in ("plan", "build"):
        assert not [step for step, _ in functions(registration)[name] if step == "withCachePolicy"]


def test_build_returns_a_container_to_chain_on(registration):
    """`dagger call build --service=X terminal` needs build to return a Container."""
    steps = functions(registration)["build"]
    return_type = steps[0][1]["returnType"]
    assert ["withObject", {"name": "Container"}] in return_type


def test_test_reports_returns_a_directory_to_export(registration):
    """`dagger call test-reports --service=X export --path=reports` needs a Directory."""
    return_type = functions(registration)["test_reports"][0][1]["returnType"]
    assert ["withObject", {"name": "Directory"}] in return_type


def test_secret_arguments_are_dagger_secrets(registration):
    """Tokens and keys arrive as Secret (env://...), never as plain strings."""
    deploy = arguments(functions(registration)["deploy"])
    for name in ("registry_token", "dokploy_key", "notify_webhook"):
        assert ["withObject", {"name": "Secret"}] in deploy[name]["typeDef"], name


def test_the_source_defaults_to_the_repository_root_without_heavy_directories(registration):
    """The constructor's source is the repo root, with .git and dependencies never uploaded."""
    (constructor,) = [args["function"] for name, args in main_object(registration) if name == "withConstructor"]
    source = arguments(constructor)["source"]
    assert source["defaultPath"] == "/"
    assert ".git" in source["ignore"]
    assert "**/node_modules" in source["ignore"]


def test_module_arguments_are_the_flags_the_readme_documents(registration):
    """The engine turns these names into the README's kebab-case flags (--skip-build, --from)."""
    deploy = arguments(functions(registration)["deploy"])
    for name in ("branch", "sha", "registry_user", "skip_build", "dry_run", "no_rollback", "summary_format"):
        assert name in deploy
    promote = arguments(functions(registration)["promote"])
    assert "from" in promote  # from_ in Python: the trailing underscore is stripped


def test_every_argument_is_documented(registration):
    """Each argument carries the help text `dagger call <function> --help` shows."""
    for name, steps in functions(registration).items():
        for argument, definition in arguments(steps).items():
            assert definition["description"], f"{name} --{argument} has no description"


def test_every_flag_the_deploy_workflow_passes_is_a_deploy_argument(registration):
    """`dagger call deploy` rejects an unknown flag: each one in deploy.yml is a kebab-cased argument."""
    workflow = yaml.safe_load((Path(__file__).parent.parent / ".github" / "workflows" / "deploy.yml").read_text())
    [step] = [s for job in workflow["jobs"].values() for s in job["steps"] if "dagger-for-github" in s.get("uses", "")]
    function, *flags = step["with"]["args"].split()
    assert function == "deploy"
    known = {"--" + name.replace("_", "-") for name in arguments(functions(registration)["deploy"])}
    assert {flag.split("=", 1)[0] for flag in flags} <= known
    # Secrets go by reference, so they must land on Secret arguments.
    for flag in flags:
        name, _, value = flag.partition("=")
        if value.startswith("env://"):
            definition = arguments(functions(registration)["deploy"])[name.removeprefix("--").replace("-", "_")]
            assert ["withObject", {"name": "Secret"}] in definition["typeDef"], name


def test_optional_arguments_carry_their_defaults(registration):
    """Secrets and lists default to null and are optional; floats register as FLOAT with their value."""
    deploy = arguments(functions(registration)["deploy"])
    for name in ("registry_token", "dokploy_key", "notify_webhook", "services"):
        assert deploy[name]["defaultValue"] == "null", name
        assert ["withOptional", {"optional": True}] in deploy[name]["typeDef"], name
    assert ["withKind", {"kind": "FLOAT_KIND"}] in deploy["deploy_timeout"]["typeDef"]
    assert json.loads(deploy["deploy_timeout"]["defaultValue"]) > 0
    for required in ("branch", "sha", "registry_user"):
        assert "defaultValue" not in deploy[required], required
