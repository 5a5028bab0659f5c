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
from types import ModuleType
from typing import Any, NoReturn

import anyio

from pipeline import config as config_module
from pipeline import engine, flows, gitinfo
from pipeline.errors import EXIT_USAGE, PipelineError, UsageError
from pipeline.plan import Plan, debug_plan, make_plan, render_json, render_table
from pipeline.progress import Progress
from pipeline.secret import SecretValue
from pipeline.summary import (
    RunSummary,
    check_json_target,
    check_step_summary,
    render_markdown,
    render_text,
    run_url_from_env,
    write_json,
    write_step_summary,
)

Handler = Callable[[argparse.Namespace], Awaitable[int]]
# The commands that end with ``report``: a summary on stdout, in $GITHUB_STEP_SUMMARY and --summary-json.
_REPORTING = frozenset({"test", "publish", "deploy", "promote", "prune"})


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
        if args.command in _REPORTING:
            # Checked before the run: a deploy that succeeded must not end in "cannot write the summary".
            check_step_summary()
            if getattr(args, "summary_json", None):
                check_json_target(args.summary_json)
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
    plan.add_argument("--offline", action="store_true", help="do not ask the registry which services can be reused")
    plan.set_defaults(handler=run_plan)

    build = commands.add_parser("build", help="build one service's image (needs a Dagger engine)")
    _source_options(build, source_required=True)
    build.add_argument("--service", required=True, help="the service to build")
    build.add_argument("--platform", default="", help="platform (default: the service's first)")
    build.add_argument("--export", type=Path, default=None, help="write the image as an OCI tarball here")
    build.set_defaults(handler=run_build)

    test = commands.add_parser(
        "test", help="build every service at once with its tests and smoke check; publish nothing (needs an engine)"
    )
    _source_options(test, source_required=True)
    _build_options(test)
    test.set_defaults(handler=run_test)

    publish = commands.add_parser("publish", help="build (or reuse), test and publish every service's tags")
    _source_options(publish, source_required=True)
    _git_options(publish)
    _registry_options(publish)
    _build_options(publish)
    _summary_options(publish)
    publish.set_defaults(handler=run_publish)

    deploy = commands.add_parser("deploy", help="publish what changed, then deploy each group gated on health")
    _source_options(deploy, source_required=True)
    _git_options(deploy)
    _registry_options(deploy)
    _dokploy_options(deploy)
    _build_options(deploy)
    _summary_options(deploy)
    deploy.add_argument("--skip-build", action="store_true", help="deploy images already published for this commit")
    deploy.add_argument("--dry-run", action="store_true", help="build and test; publish and deploy nothing")
    deploy.add_argument("--no-rollback", action="store_true", help="leave a failed group as it is")
    deploy.add_argument("--run-url", default="", help="link to this run (default: from GITHUB_* variables)")
    deploy.add_argument(
        "--notify-webhook-env", default="SLACK_WEBHOOK_URL", help="variable holding the webhook URL (optional)"
    )
    deploy.set_defaults(handler=run_deploy)

    promote = commands.add_parser("promote", help="copy one environment's digests onto another's tags, then deploy")
    promote.add_argument("--config", type=Path, default=Path("services.toml"), help="services.toml")
    promote.add_argument("--from", dest="source_env", required=True, help="environment to promote from")
    promote.add_argument("--to", dest="target_env", required=True, help="environment to promote to")
    promote.add_argument("--services", default="", help="comma-separated subset (default: all)")
    promote.add_argument("--no-deploy", action="store_true", help="only copy the tags")
    promote.add_argument("--no-rollback", action="store_true", help="leave a failed group as it is")
    _registry_options(promote)
    _dokploy_options(promote)
    _summary_options(promote)
    promote.set_defaults(handler=run_promote, source=None)

    prune = commands.add_parser("prune", help="delete old GHCR versions, never one in use (dry run by default)")
    prune.add_argument("--config", type=Path, default=Path("services.toml"), help="services.toml")
    prune.add_argument("--keep", type=int, default=10, help="newest versions to keep per image")
    prune.add_argument("--apply", action="store_true", help="delete for real")
    prune.add_argument(
        "--owner-type", choices=["org", "user"], default="org", help="who owns the packages (user: the token's own)"
    )
    prune.add_argument("--github-api-url", default="https://api.github.com", help="GitHub API (for GHES)")
    _registry_options(prune)
    _dokploy_options(prune)
    _summary_options(prune)
    prune.set_defaults(handler=run_prune, source=None)

    doctor = commands.add_parser("doctor", help="check everything a deploy needs; change nothing")
    _source_options(doctor, source_required=True)
    _registry_options(doctor)
    _dokploy_options(doctor)
    doctor.set_defaults(handler=run_doctor)

    status = commands.add_parser("status", help="what each environment runs: Dokploy state, deployments, health")
    status.add_argument("--config", type=Path, default=Path("services.toml"), help="services.toml")
    status.add_argument("--environment", default="", help="one environment (default: all)")
    status.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    _dokploy_options(status)
    status.set_defaults(handler=run_status, source=None)
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


def _dokploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dokploy-url", default="", help="Dokploy URL (default: [dokploy] url in services.toml)")
    parser.add_argument(
        "--dokploy-key-env",
        default="DOKPLOY_API_KEY",
        help="environment variable holding the Dokploy API key (default: DOKPLOY_API_KEY)",
    )
    parser.add_argument(
        "--deploy-timeout",
        type=float,
        default=flows.DEPLOY_TIMEOUT_S,
        help=f"seconds a Dokploy deployment may take (default: {flows.DEPLOY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=flows.POLL_INTERVAL_S,
        help=f"seconds between Dokploy status reads (default: {flows.POLL_INTERVAL_S:g})",
    )


def _build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force-build", action="store_true", help="build even when the registry has the inputs")
    parser.add_argument("--skip-tests", action="store_true", help="emergencies only: publish without tests")
    parser.add_argument("--concurrency", type=int, default=0, help="services built at once (0: all)")
    parser.add_argument("--fail-fast", action="store_true", help="cancel the other builds at the first failure")
    _reports_option(parser)


def _reports_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports-dir", type=Path, default=None, help="export each service's test reports here")


def _summary_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary-json", type=Path, default=None, help="also write the summary as JSON here")


def load_config(args: argparse.Namespace) -> config_module.Config:
    """services.toml from --config, else from the source root, else the working directory."""
    _check_source(args)
    path = args.config or ((args.source / "services.toml") if args.source else Path("services.toml"))
    return config_module.load(path)


def _check_source(args: argparse.Namespace) -> None:
    source = getattr(args, "source", None)
    if source is not None and not source.is_dir():
        problem = "does not exist" if not source.exists() else "is not a directory"
        raise UsageError(f"--source {source} {problem}: pass the repository root that holds the service contexts")


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
    token = credentials(args).registry_token
    if token is None:
        return changes.unchecked(plan, f"could not look: no registry token in ${args.registry_token_env}")
    import httpx  # noqa: PLC0415

    from pipeline.registry import RegistryClient  # noqa: PLC0415

    async with httpx.AsyncClient(timeout=httpx.Timeout(15, connect=5)) as http:
        registry = RegistryClient(
            http,
            registry=plan.config.registry.host,
            username=args.registry_user or "pipeline",
            token=token,
        )
        return await changes.lookup(plan, registry)


def credentials(args: argparse.Namespace) -> flows.Credentials:
    """Secrets from the environment variables the arguments name; absent ones stay None."""

    def read(option: str) -> SecretValue | None:
        variable = getattr(args, option, "")
        value = os.environ.get(variable, "") if variable else ""
        return SecretValue(variable, value) if value else None

    return flows.Credentials(
        registry_user=getattr(args, "registry_user", "") or "",
        registry_token=read("registry_token_env"),
        dokploy_key=read("dokploy_key_env"),
        notify_webhook=read("notify_webhook_env"),
        variables={
            "registry_token": getattr(args, "registry_token_env", ""),
            "dokploy_key": getattr(args, "dokploy_key_env", ""),
        },
    )


def report(summary: RunSummary, args: argparse.Namespace) -> int:
    """Print the summary, write it where Actions and --summary-json want it; 1 when the run failed."""
    print(render_text(summary))
    # Write both even when one fails (a file removed during the run): each is someone's record of it.
    problems = []
    try:
        write_step_summary(render_markdown(summary))
    except PipelineError as error:
        problems.append(str(error))
    if getattr(args, "summary_json", None):
        try:
            write_json(summary, args.summary_json)
        except PipelineError as error:
            problems.append(str(error))
    if problems:
        raise PipelineError("; ".join(problems))
    return 0 if summary.ok else 1


def _options(args: argparse.Namespace, **extra: object) -> flows.Options:
    fields = {
        "dokploy_url": getattr(args, "dokploy_url", ""),
        "run_url": getattr(args, "run_url", "") or run_url_from_env(),
        "force_build": getattr(args, "force_build", False),
        "skip_tests": getattr(args, "skip_tests", False),
        "concurrency": getattr(args, "concurrency", 0),
        "fail_fast": getattr(args, "fail_fast", False),
        "rollback": not getattr(args, "no_rollback", False),
        "deploy_timeout_s": getattr(args, "deploy_timeout", flows.DEPLOY_TIMEOUT_S),
        "poll_interval_s": getattr(args, "poll_interval", flows.POLL_INTERVAL_S),
    }
    return flows.Options(**{**fields, **extra})  # type: ignore[arg-type]


async def run_build(args: argparse.Namespace) -> int:
    """``build``: build one service in the engine; export it when asked."""
    from pipeline import build as building  # noqa: PLC0415 - imports dagger only when an engine is used.

    plan = debug_plan(load_config(args), services=[args.service], source=args.source, origin="python -m pipeline build")
    service = plan.service(args.service)
    async with engine.connected():
        secrets = await building.named_build_secrets(service.service)
        container = building.build_container(
            engine.host_source(args.source),
            service,
            platform=args.platform or service.service.platforms[0],
            secrets=secrets,
        )
        if args.export:
            await container.export(str(args.export.resolve()))
            print(f"{args.service}: image written to {args.export}")
        else:
            await container.sync()
            print(f"{args.service}: built ({len(await container.env_variables())} environment variables, labels set)")
    return 0


async def run_test(args: argparse.Namespace) -> int:
    """``test``: build the services and run their tests and smoke checks; publish nothing."""
    from pipeline import build as building  # noqa: PLC0415

    plan = debug_plan(
        load_config(args),
        services=args.services,
        source=args.source,
        origin="python -m pipeline test",
        environment=args.environment,
    )
    async with engine.connected():
        images = building.DaggerImageEngine(engine.host_source(args.source), reports_dir=args.reports_dir)
        summary = await flows.run_tests(
            plan, engine=images, options=_options(args), reports=images.read_reports, progress=Progress()
        )
    return report(summary, args)


async def run_publish(args: argparse.Namespace) -> int:
    """``publish``: reuse or build, test and publish; deploy nothing."""
    from pipeline import build as building  # noqa: PLC0415

    plan = load_plan(args)
    creds = credentials(args)
    async with engine.connected():
        images = _image_engine(building, args, creds)
        summary = await flows.publish(
            plan,
            engine=images,
            credentials=creds,
            options=_options(args),
            reports=images.read_reports,
            progress=Progress(),
        )
    return report(summary, args)


async def run_deploy(args: argparse.Namespace) -> int:
    """``deploy``: the main job; with --skip-build it needs no engine."""
    plan = load_plan(args)
    creds = credentials(args)
    options = _options(args, skip_build=args.skip_build, dry_run=args.dry_run)
    if args.skip_build:
        summary = await flows.deploy(plan, engine=None, credentials=creds, options=options, progress=Progress())
        return report(summary, args)
    from pipeline import build as building  # noqa: PLC0415

    async with engine.connected():
        images = _image_engine(building, args, creds)
        summary = await flows.deploy(
            plan,
            engine=images,
            credentials=creds,
            options=options,
            reports=images.read_reports,
            progress=Progress(),
        )
    return report(summary, args)


def _image_engine(building: ModuleType, args: argparse.Namespace, creds: flows.Credentials) -> Any:
    """The Dagger image engine for the host's source, with the registry credentials and report export."""
    return building.DaggerImageEngine(
        engine.host_source(args.source),
        registry_user=creds.registry_user,
        token=engine.secret(creds.registry_token),
        reports_dir=args.reports_dir,
    )


async def run_promote(args: argparse.Namespace) -> int:
    """``promote``: copy digests between environments, verified, then deploy."""
    summary = await flows.promote(
        load_config(args),
        source_env=args.source_env,
        target_env=args.target_env,
        services=args.services,
        credentials=credentials(args),
        options=_options(args),
        deploy=not args.no_deploy,
        progress=Progress(),
    )
    return report(summary, args)


async def run_prune(args: argparse.Namespace) -> int:
    """``prune``: retention for GHCR, dry run unless --apply."""
    summary = await flows.prune(
        load_config(args),
        keep=args.keep,
        apply=args.apply,
        owner_type=args.owner_type,
        credentials=credentials(args),
        options=_options(args, github_api_url=args.github_api_url),
    )
    return report(summary, args)


async def run_doctor(args: argparse.Namespace) -> int:
    """``doctor``: every pre-flight check, with the fix for each failure."""
    path = args.config or args.source / "services.toml"
    result = await flows.doctor(
        args.source,
        config_path=path,
        environment=args.environment,
        credentials=credentials(args),
        options=_options(args),
    )
    print(flows.render_doctor(result))
    return 0 if result.ok else 1


async def run_status(args: argparse.Namespace) -> int:
    """``status``: what each environment runs now; 1 when a target could not be read."""
    try:
        print(
            await flows.status(
                load_config(args),
                environment=args.environment,
                credentials=credentials(args),
                options=_options(args),
                output=args.format,
            )
        )
    except flows.RunFailedError as incomplete:
        print(incomplete.message)
        return 1
    return 0
