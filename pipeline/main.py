"""The Dagger module: ``dagger call <function> ...``.

This class stays thin. Each function turns its Dagger arguments (a
``Directory``, ``Secret`` values) into the plain inputs of ``pipeline.flows``,
the same coroutines ``python -m pipeline`` runs in library mode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import dagger
from dagger import DefaultPath, Doc, Ignore, function, object_type

from pipeline import build as building
from pipeline import flows
from pipeline.checks import DEFAULT_PROBER_IMAGE
from pipeline.config import Config
from pipeline.config import load as load_config
from pipeline.content import SOURCE_IGNORE
from pipeline.gitinfo import resolve as resolve_git
from pipeline.localcopy import copy_for_run
from pipeline.plan import Plan, debug_plan, make_plan, render_json, render_table
from pipeline.secret import SecretValue

F = TypeVar("F", bound=Callable[..., Any])


def uncached(func: F) -> F:
    """``@function(cache="never")``: a cached deploy would be a cache hit that publishes and deploys nothing."""
    # dagger-io 0.21.11 accepts cache= at run time, but its typing overloads leave it out.
    decorate: Any = function
    result: F = decorate(cache="never")(func)
    return result


Source = Annotated[dagger.Directory, DefaultPath("/"), Ignore(SOURCE_IGNORE), Doc("the repository root")]
Branch = Annotated[str, Doc("branch being built (in Actions: github.ref_name)")]
Sha = Annotated[str, Doc("commit being built (in Actions: github.sha)")]
Environment = Annotated[str, Doc("environment to deploy (default: the one the branch deploys to)")]
Services = Annotated[list[str] | None, Doc("only these services (default: all)")]
RegistryUser = Annotated[str, Doc("registry user name (in Actions: github.actor)")]
RegistryToken = Annotated[dagger.Secret | None, Doc("registry token, e.g. env://GITHUB_TOKEN")]
DokployKey = Annotated[dagger.Secret | None, Doc("Dokploy API key, e.g. env://DOKPLOY_API_KEY")]
DokployUrl = Annotated[str, Doc("Dokploy URL (default: [dokploy] url in services.toml)")]
Concurrency = Annotated[int, Doc("services built at once (0: all)")]
FailFast = Annotated[bool, Doc("cancel the other builds at the first failure")]
SummaryFormat = Annotated[str, Doc("text, markdown or json")]
DeployTimeout = Annotated[float, Doc("seconds a Dokploy deployment may take before it counts as stuck")]
PollInterval = Annotated[float, Doc("seconds between reads of Dokploy's deployment record")]
BuildSecrets = Annotated[
    list[dagger.Secret] | None,
    Doc("the sources services.toml's [services.X.secrets] name, e.g. env://NPM_TOKEN (read on your machine)"),
]
SmokeProber = Annotated[str, Doc("image that probes smoke checks (needs sh and wget), or 'self': the built image")]
NotifyWebhook = Annotated[
    dagger.Secret | None, Doc("Slack-compatible incoming webhook URL, e.g. env://SLACK_WEBHOOK_URL")
]


@object_type
class Pipeline:
    """Build, publish and deploy the BizOSaaS services."""

    source: Source
    config: Annotated[str, Doc("path of services.toml inside the source")] = "services.toml"

    @function
    async def plan(
        self,
        branch: Branch,
        sha: Sha,
        environment: Environment = "",
        services: Services = None,
        format: Annotated[str, Doc("table or json")] = "table",
    ) -> str:
        """Show what a run would build, tag and deploy."""
        plan = await self._plan(branch=branch, sha=sha, environment=environment, services=services)
        return render_json(plan) if format == "json" else render_table(plan)

    @function
    async def build(
        self,
        service: Annotated[str, Doc("the service to build")],
        platform: Annotated[str, Doc("platform to build for (default: the service's first)")] = "",
        build_secrets: BuildSecrets = None,
    ) -> dagger.Container:
        """Build one service's image, to chain terminal, with-exec, export or publish on it."""
        local = await self._local(services=[service])
        plan = debug_plan(
            load_config(local / self.config), services=[service], source=local, origin="dagger call build"
        )
        service_plan = plan.service(service)
        secrets = await building.named_build_secrets(
            service_plan.service, given=await building.secrets_by_uri(build_secrets)
        )
        return building.build_container(
            self.source, service_plan, platform=platform or service_plan.service.platforms[0], secrets=secrets
        )

    @uncached
    async def test(
        self,
        service: Annotated[str, Doc("the service whose tests to run")],
        smoke_prober: SmokeProber = DEFAULT_PROBER_IMAGE,
        build_secrets: BuildSecrets = None,
    ) -> str:
        """Build one service and run its tests and smoke check."""
        local = await self._local(services=[service])
        plan = debug_plan(load_config(local / self.config), services=[service], source=local, origin="dagger call test")
        engine = await self._engine(smoke_prober, build_secrets)
        summary = await flows.run_tests(plan, engine=engine, reports=engine.read_reports)
        return flows.finish(summary, "text")

    @uncached
    async def build_all(
        self,
        services: Services = None,
        concurrency: Concurrency = 0,
        fail_fast: FailFast = False,
        skip_tests: Annotated[bool, Doc("only build: skip the tests and smoke checks")] = False,
        smoke_prober: SmokeProber = DEFAULT_PROBER_IMAGE,
        build_secrets: BuildSecrets = None,
    ) -> str:
        """Build every service at once (bounded), with its tests and smoke check; publish nothing."""
        local = await self._local(services=services)
        plan = debug_plan(
            load_config(local / self.config), services=services, source=local, origin="dagger call build-all"
        )
        engine = await self._engine(smoke_prober, build_secrets)
        options = flows.Options(concurrency=concurrency, fail_fast=fail_fast, skip_tests=skip_tests)
        summary = await flows.run_tests(plan, engine=engine, options=options, reports=engine.read_reports)
        return flows.finish(summary, "text")

    @uncached
    async def test_reports(
        self, service: Annotated[str, Doc("the service whose tests to run")], build_secrets: BuildSecrets = None
    ) -> dagger.Directory:
        """Run one service's tests and return its reports directory, to chain export --path=reports."""
        local = await self._local(services=[service])
        plan = debug_plan(
            load_config(local / self.config), services=[service], source=local, origin="dagger call test-reports"
        ).service(service)
        engine = await self._engine(DEFAULT_PROBER_IMAGE, build_secrets)
        return await engine.reports_directory(plan)

    @uncached
    async def publish(
        self,
        branch: Branch,
        sha: Sha,
        registry_user: RegistryUser,
        registry_token: RegistryToken = None,
        environment: Environment = "",
        services: Services = None,
        force_build: Annotated[bool, Doc("build even when the registry has the same inputs")] = False,
        skip_tests: Annotated[bool, Doc("emergencies only: publish without running the tests")] = False,
        concurrency: Concurrency = 0,
        fail_fast: FailFast = False,
        summary_format: SummaryFormat = "text",
        smoke_prober: SmokeProber = DEFAULT_PROBER_IMAGE,
        build_secrets: BuildSecrets = None,
    ) -> str:
        """Build (or reuse), test and publish every service's tags; deploy nothing."""
        plan = await self._plan(branch=branch, sha=sha, environment=environment, services=services)
        engine = await self._engine(smoke_prober, build_secrets, registry_user=registry_user, token=registry_token)
        summary = await flows.publish(
            plan,
            engine=engine,
            reports=engine.read_reports,
            credentials=await _credentials(registry_user=registry_user, registry_token=registry_token),
            options=flows.Options(
                force_build=force_build, skip_tests=skip_tests, concurrency=concurrency, fail_fast=fail_fast
            ),
        )
        return flows.finish(summary, summary_format)

    @uncached
    async def deploy(
        self,
        branch: Branch,
        sha: Sha,
        registry_user: RegistryUser,
        registry_token: RegistryToken = None,
        dokploy_key: DokployKey = None,
        environment: Environment = "",
        services: Services = None,
        event: Annotated[str, Doc("what triggered the run (github.event_name)")] = "push",
        run_url: Annotated[str, Doc("link to this run, for the summary and notifications")] = "",
        dokploy_url: DokployUrl = "",
        skip_build: Annotated[bool, Doc("deploy the already published images of this commit")] = False,
        force_build: Annotated[bool, Doc("build even when the registry has the same inputs")] = False,
        skip_tests: Annotated[bool, Doc("emergencies only: publish without running the tests")] = False,
        dry_run: Annotated[bool, Doc("build and test, but publish and deploy nothing")] = False,
        no_rollback: Annotated[bool, Doc("leave a failed group as it is instead of rolling back")] = False,
        concurrency: Concurrency = 0,
        fail_fast: FailFast = False,
        summary_format: SummaryFormat = "text",
        notify_webhook: NotifyWebhook = None,
        smoke_prober: SmokeProber = DEFAULT_PROBER_IMAGE,
        deploy_timeout: DeployTimeout = flows.DEPLOY_TIMEOUT_S,
        poll_interval: PollInterval = flows.POLL_INTERVAL_S,
        build_secrets: BuildSecrets = None,
    ) -> str:
        """Build what changed, publish it, then deploy each group in order, gated on health."""
        plan = await self._plan(branch=branch, sha=sha, environment=environment, services=services, event=event)
        engine = await self._engine(smoke_prober, build_secrets, registry_user=registry_user, token=registry_token)
        summary = await flows.deploy(
            plan,
            engine=engine,
            reports=engine.read_reports,
            credentials=await _credentials(
                registry_user=registry_user,
                registry_token=registry_token,
                dokploy_key=dokploy_key,
                notify_webhook=notify_webhook,
            ),
            options=flows.Options(
                dokploy_url=dokploy_url,
                run_url=run_url,
                skip_build=skip_build,
                force_build=force_build,
                skip_tests=skip_tests,
                dry_run=dry_run,
                rollback=not no_rollback,
                concurrency=concurrency,
                fail_fast=fail_fast,
                deploy_timeout_s=deploy_timeout,
                poll_interval_s=poll_interval,
            ),
        )
        return flows.finish(summary, summary_format)

    @uncached
    async def promote(
        self,
        from_: Annotated[str, Doc("environment whose images to promote, e.g. staging")],
        to: Annotated[str, Doc("environment to promote them to, e.g. production")],
        registry_user: RegistryUser,
        registry_token: RegistryToken = None,
        dokploy_key: DokployKey = None,
        services: Services = None,
        dokploy_url: DokployUrl = "",
        no_deploy: Annotated[bool, Doc("only copy the tags")] = False,
        no_rollback: Annotated[bool, Doc("leave a failed group as it is instead of rolling back")] = False,
        run_url: Annotated[str, Doc("link to this run, for the summary")] = "",
        summary_format: SummaryFormat = "text",
        deploy_timeout: DeployTimeout = flows.DEPLOY_TIMEOUT_S,
        poll_interval: PollInterval = flows.POLL_INTERVAL_S,
    ) -> str:
        """Copy the exact digests of one environment onto another's tags, then deploy them."""
        config = load_config(await self._local(contexts=False) / self.config)
        summary = await flows.promote(
            config,
            source_env=from_,
            target_env=to,
            services=services,
            credentials=await _credentials(
                registry_user=registry_user, registry_token=registry_token, dokploy_key=dokploy_key
            ),
            options=flows.Options(
                dokploy_url=dokploy_url,
                run_url=run_url,
                rollback=not no_rollback,
                deploy_timeout_s=deploy_timeout,
                poll_interval_s=poll_interval,
            ),
            deploy=not no_deploy,
        )
        return flows.finish(summary, summary_format)

    @uncached
    async def prune(
        self,
        github_token: Annotated[dagger.Secret, Doc("GITHUB_TOKEN or a PAT with delete:packages")],
        keep: Annotated[int, Doc("newest versions to keep per image")] = 10,
        apply: Annotated[bool, Doc("delete for real (default: dry run)")] = False,
        owner_type: Annotated[
            str, Doc("org or user (then the token must be that user's): who owns the packages")
        ] = "org",
        registry_user: RegistryUser = "",
        dokploy_key: DokployKey = None,
        dokploy_url: DokployUrl = "",
        summary_format: SummaryFormat = "text",
    ) -> str:
        """Delete old image versions from GHCR, never one in use."""
        config = load_config(await self._local(contexts=False) / self.config)
        summary = await flows.prune(
            config,
            keep=keep,
            apply=apply,
            owner_type=owner_type,
            credentials=await _credentials(
                registry_user=registry_user, registry_token=github_token, dokploy_key=dokploy_key
            ),
            options=flows.Options(dokploy_url=dokploy_url),
        )
        return flows.finish(summary, summary_format)

    @uncached
    async def doctor(
        self,
        registry_user: RegistryUser = "",
        registry_token: RegistryToken = None,
        dokploy_key: DokployKey = None,
        dokploy_url: DokployUrl = "",
        environment: Environment = "",
    ) -> str:
        """Check everything a deploy needs, change nothing, and say how to fix each failure."""
        local = await self._local(compose_files=True)
        report = await flows.doctor(
            local,
            config_path=local / self.config,
            environment=environment,
            credentials=await _credentials(
                registry_user=registry_user, registry_token=registry_token, dokploy_key=dokploy_key
            ),
            options=flows.Options(dokploy_url=dokploy_url),
        )
        return flows.finish_doctor(report)

    @uncached
    async def status(
        self,
        dokploy_key: DokployKey = None,
        dokploy_url: DokployUrl = "",
        environment: Environment = "",
        format: Annotated[str, Doc("table or json")] = "table",
    ) -> str:
        """Show what each environment runs: Dokploy's state, last deployments, pinned images, health."""
        config = load_config(await self._local(contexts=False) / self.config)
        return await flows.status(
            config,
            environment=environment,
            credentials=await _credentials(dokploy_key=dokploy_key),
            options=flows.Options(dokploy_url=dokploy_url),
            output=format,
        )

    async def _engine(
        self,
        smoke_prober: str,
        build_secrets: list[dagger.Secret] | None,
        *,
        registry_user: str = "",
        token: dagger.Secret | None = None,
    ) -> building.DaggerImageEngine:
        """The image engine over this source, with the caller's build secrets keyed by their URI."""
        return building.DaggerImageEngine(
            self.source,
            registry_user=registry_user,
            token=token,
            prober_image=smoke_prober,
            build_secrets=await building.secrets_by_uri(build_secrets),
        )

    async def _local(
        self, *, services: list[str] | None = None, contexts: bool = True, compose_files: bool = False
    ) -> Path:
        """What this call reads of the source, exported into the runtime container (pipeline.localcopy)."""
        return await copy_for_run(
            self.source, config=self.config, services=services, contexts=contexts, compose_files=compose_files
        )

    async def _plan(
        self, *, branch: str, sha: str, environment: str, services: list[str] | None, event: str = ""
    ) -> Plan:
        local = await self._local(services=services)
        config: Config = load_config(local / self.config)
        # .git is not uploaded, so the commit comes from the arguments.
        git = resolve_git(None, branch=branch, sha=sha, event=event, env={})
        return make_plan(config, git, environment=environment, services=services, source=local)


async def _credentials(
    *,
    registry_user: str = "",
    registry_token: dagger.Secret | None = None,
    dokploy_key: dagger.Secret | None = None,
    notify_webhook: dagger.Secret | None = None,
) -> flows.Credentials:
    """Dagger secrets as SecretValues: read once, at the boundary, never printed."""

    async def value(name: str, secret: dagger.Secret | None) -> SecretValue | None:
        # An unset repository secret arrives as an empty variable: that is "not given".
        plaintext = await secret.plaintext() if secret is not None else ""
        return SecretValue(name, plaintext) if plaintext else None

    return flows.Credentials(
        registry_user=registry_user,
        registry_token=await value("--registry-token", registry_token),
        dokploy_key=await value("--dokploy-key", dokploy_key),
        notify_webhook=await value("--notify-webhook", notify_webhook),
    )
