"""``python -m pipeline``: the library-mode front door.

The same coroutines the Dagger module calls run here, outside the module
runtime: ``plan``, ``doctor``, ``status``, ``prune`` and ``deploy --skip-build``
need no engine at all; ``build``, ``publish``, ``test`` and a full ``deploy``
open ``dagger.connection()`` and pass host directories and secrets explicitly.

Exit codes: 0 success, 1 a failure of the run, 2 a usage or configuration
error. Errors are one ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NoReturn

import anyio

from pipeline import config as config_module
from pipeline import gitinfo
from pipeline.errors import EXIT_USAGE, PipelineError
from pipeline.plan import Plan, make_plan, render_json, render_table

Handler = Callable[[argparse.Namespace], Awaitable[int]]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one ``error:`` line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return anyio.run(handler, args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(prog="python -m pipeline", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    plan = commands.add_parser("plan", help="show what a run would build, tag and deploy (no engine, no credentials)")
    _source_options(plan, source_required=False)
    _git_options(plan)
    _registry_options(plan)
    plan.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    plan.add_argument(
        "--offline", action="store_true", help="do not ask the registry which services can be reused"
    )
    plan.set_defaults(handler=run_plan)

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


def _source_options(parser: argparse.ArgumentParser, *, source_required: bool) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(".") if source_required else None,
        help="the repository root holding the service contexts" + ("" if source_required else " (optional)"),
    )
    parser.add_argument("--config", type=Path, default=None, help="services.toml (default: <source>/services.toml)")
    parser.add_argument("--environment", default="", help="environment to plan for (default: from the branch)")
    parser.add_argument("--services", default="", help="comma-separated subset of services (default: all)")


def _git_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--branch", default="", help="branch (default: GITHUB_REF_NAME, else git)")
    parser.add_argument("--sha", default="", help="commit (default: GITHUB_SHA, else git)")
    parser.add_argument("--event", default="", help="what triggered the run (push, workflow_dispatch, local)")


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-user",
        default=os.environ.get("GITHUB_ACTOR", ""),
        help="registry user name (default: GITHUB_ACTOR)",
    )
    parser.add_argument(
        "--registry-token-env",
        default="GITHUB_TOKEN",
        help="environment variable holding the registry token (default: GITHUB_TOKEN)",
    )


def load_config(args: argparse.Namespace) -> config_module.Config:
    """services.toml from --config, else from the source root, else the working directory."""
    path = args.config or ((args.source / "services.toml") if args.source else Path("services.toml"))
    return config_module.load(path)


def load_plan(args: argparse.Namespace) -> Plan:
    """The plan for the arguments' config, git context, environment and services."""
    config = load_config(args)
    git = gitinfo.resolve(args.source or Path("."), branch=args.branch, sha=args.sha, event=args.event)
    return make_plan(config, git, environment=args.environment, services=args.services, source=args.source)


async def run_plan(args: argparse.Namespace) -> int:
    """``plan``: print the plan, with build/reuse decisions when the registry can be asked."""
    plan = load_plan(args)
    if plan.services and plan.services[0].content_tag:
        plan = plan.with_actions(await _reuse_actions(plan, args))
    print(render_json(plan) if args.format == "json" else render_table(plan))
    return 0


async def _reuse_actions(plan: Plan, args: argparse.Namespace) -> dict[str, str]:
    from pipeline import changes  # noqa: PLC0415 - keeps httpx off the import path of offline plans.

    if args.offline:
        return changes.unchecked(plan, "not checked: --offline")
    token = os.environ.get(args.registry_token_env, "")
    if not token:
        return changes.unchecked(plan, f"could not look: no registry token in ${args.registry_token_env}")
    import httpx  # noqa: PLC0415

    from pipeline.registry import RegistryClient  # noqa: PLC0415
    from pipeline.secret import SecretValue  # noqa: PLC0415

    async with httpx.AsyncClient(timeout=httpx.Timeout(15, connect=5)) as http:
        registry = RegistryClient(
            http,
            registry=plan.config.registry.host,
            username=args.registry_user or "pipeline",
            token=SecretValue(args.registry_token_env, token),
        )
        return await changes.lookup(plan, registry)


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []
