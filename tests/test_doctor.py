"""The doctor against real doubles: a docker-registry with token auth, the Dokploy double, real files.

Each test starts from a correct setup, breaks one thing, and checks that exactly
that row fails with its fix while every other check still ran. No test may change
anything: the Dokploy double's request log must hold GETs only.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from pipeline.doctor import Check, DoctorReport, health_url_problem, render, run_doctor
from pipeline.dokploy import DokployClient, default_timeout
from pipeline.registry import RegistryClient
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue

if TYPE_CHECKING:
    from tests.support.dokploy_double import RunningDokploy
    from tests.support.registry import TokenAuthRegistry

# The doubles' fixtures. Their modules are only named here (types aside), never

FAST = RetryPolicy(attempts=2, timeout_s=2.0, wait_initial_s=0.005, wait_max_s=0.01)
DB_PASSWORD = "db-password-never-printed-7Qx"
COMPOSE_FILE = "dokploy-backend-staging-ghcr.yml"
GOOD_COMPOSE = """
services:
  brain:
    image: ${BRAIN_GATEWAY_IMAGE}
    ports: ["8001:8001"]
  saleor:
    image: ghcr.io/saleor/saleor:3.20
"""


@dataclass
class World:
    """A correct setup: source tree, services.toml, registry and Dokploy with both targets."""

    root: Path
    registry: TokenAuthRegistry
    dokploy: RunningDokploy
    http: httpx.AsyncClient
    backend_id: str
    frontend_id: str

    def image(self, service: str) -> str:
        return f"{self.registry.host}/bizoholic-digital/bizosaas-{service}"

    def write_config(
        self,
        *,
        backend_id: str = "",
        health_url: str = "http://127.0.0.1:9/health",
        dokploy_url: str = "",
        production: str = "",
    ) -> Path:
        text = f"""
[registry]
host = "{self.registry.host}"
namespace = "bizoholic-digital"
image_prefix = "bizosaas-"

[dokploy]
url = "{dokploy_url or self.dokploy.url}"

[environments.staging]
branch = "staging"
tags = ["staging", "staging-{{sha}}"]

[environments.production]
branch = "main"
tags = ["latest", "main-{{sha}}"]

[services.brain-gateway]
context = "bizosaas/ai/services/bizosaas-brain"
image_variable = "BRAIN_GATEWAY_IMAGE"

[services.client-portal]
context = "bizosaas/frontend/apps/client-portal"
dockerfile = "Dockerfile.production"

[[groups]]
name = "backend"
services = ["brain-gateway"]

[groups.targets.staging]
compose_id = "{backend_id or self.backend_id}"
compose_file = "{COMPOSE_FILE}"

[[groups.targets.staging.health]]
name = "brain-gateway"
url = "{health_url}"
{production}
[[groups]]
name = "frontend"
services = ["client-portal"]

[groups.targets.staging]
application_id = "{self.frontend_id}"

[[groups.targets.staging.health]]
url = "http://127.0.0.1:9/"
"""
        path = self.root / "services.toml"
        path.write_text(text)
        return path

    def credentials(self, *, push: bool = True) -> tuple[str, str]:
        """A user of the token service that may push (or only pull), with its password."""
        for user, (password, actions) in self.registry.tokens.users.items():
            if ("push" in actions) == push:
                return user, password
        raise AssertionError("the token service has no such user")

    def registry_client(self, *, reader: bool = False, password: str = "") -> RegistryClient:
        """A client as the pusher (or the pull-only reader), optionally with another password."""
        user, known = self.credentials(push=not reader)
        token = SecretValue("GITHUB_TOKEN", password or known)
        return RegistryClient(self.http, registry=self.registry.host, username=user, token=token, retry=FAST)

    def dokploy_client(self, key: str | None = None, url: str = "") -> DokployClient:
        secret = SecretValue("DOKPLOY_API_KEY", key if key is not None else self.dokploy.api_key)
        return DokployClient(self.http, base_url=url or self.dokploy.url, api_key=secret, retry=FAST)

    async def doctor(
        self,
        *,
        environment: str = "staging",
        registry: RegistryClient | bool | None = True,
        dokploy: DokployClient | bool | None = True,
        dokploy_url: str = "",
        config_path: Path | None = None,
    ) -> DoctorReport:
        config = config_path or self.root / "services.toml"
        if config_path is None and not config.exists():
            self.write_config()
        return await run_doctor(
            config,
            source=self.root,
            environment=environment,
            registry=self.registry_client() if registry is True else registry or None,
            dokploy=self.dokploy_client() if dokploy is True else dokploy or None,
            http=self.http,
            dokploy_url=dokploy_url,
        )

    def changes(self) -> list[str]:
        """Requests to Dokploy that were not reads."""
        return [f"{r.method} {r.path}" for r in self.dokploy.double.requests if r.method not in ("GET", "HEAD")]


@pytest.fixture
async def world(
    tmp_path: Path, registry_with_token_auth: TokenAuthRegistry, dokploy: RunningDokploy
) -> AsyncIterator[World]:
    root = tmp_path / "source"
    for context, dockerfile in (
        ("bizosaas/ai/services/bizosaas-brain", "Dockerfile"),
        ("bizosaas/frontend/apps/client-portal", "Dockerfile.production"),
    ):
        (root / context).mkdir(parents=True)
        (root / context / dockerfile).write_text("FROM scratch\n")
    (root / COMPOSE_FILE).write_text(GOOD_COMPOSE)
    brain = f"{registry_with_token_auth.host}/bizoholic-digital/bizosaas-brain-gateway:staging-abc1234"
    backend = dokploy.double.add_compose(
        name="bizosaas-backend-staging",
        env=f"BRAIN_GATEWAY_IMAGE={brain}\nDB_PASSWORD={DB_PASSWORD}\n",
        status="done",
    )
    frontend = dokploy.double.add_application(
        name="client-portal",
        docker_image=f"{registry_with_token_auth.host}/bizoholic-digital/bizosaas-client-portal:staging",
        status="done",
    )
    async with httpx.AsyncClient(timeout=default_timeout()) as http:
        yield World(
            root=root,
            registry=registry_with_token_auth,
            dokploy=dokploy,
            http=http,
            backend_id=backend.id,
            frontend_id=frontend.id,
        )


def row(report: DoctorReport, name: str) -> Check:
    matches = [c for c in report.checks if c.name == name]
    assert len(matches) == 1, f"no single row {name!r} in {[c.name for c in report.checks]}"
    return matches[0]


def not_passed(report: DoctorReport) -> dict[str, bool | None]:
    return {c.name: c.ok for c in report.checks if c.ok is not True}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_correct_setup_passes_every_check_and_changes_nothing(world):
    """On a correct setup every row passes, Dokploy only sees GETs, and no secret is printed."""
    report = await world.doctor()
    assert not_passed(report) == {}
    assert report.ok
    assert [c.name for c in report.checks] == [
        "services.toml",
        "source brain-gateway",
        "source client-portal",
        "push brain-gateway",
        "push client-portal",
        "dokploy url",
        "dokploy key",
        "staging/backend compose",
        "staging/backend compose file brain-gateway",
        "staging/backend env",
        "staging/frontend application",
        "staging/backend health urls",
        "staging/frontend health urls",
    ]
    assert world.changes() == []
    text = render(report)
    assert "all checks passed (13 ok, 0 failed, 0 skipped)" in text
    for secret in (world.dokploy.api_key, world.credentials()[1], DB_PASSWORD):
        assert secret not in text
        assert secret not in repr(report)


async def test_missing_context_fails_that_service_only(world):
    """A missing build context fails its own service's row, with the path and the fix."""
    (world.root / "bizosaas/frontend/apps/client-portal/Dockerfile.production").unlink()
    (world.root / "bizosaas/frontend/apps/client-portal").rmdir()
    report = await world.doctor()
    assert not_passed(report) == {"source client-portal": False}
    check = row(report, "source client-portal")
    assert "'bizosaas/frontend/apps/client-portal' does not exist" in check.detail
    assert "--source" in check.fix


async def test_missing_dockerfile_fails_with_its_path(world):
    """A context without its Dockerfile fails, naming the Dockerfile."""
    (world.root / "bizosaas/ai/services/bizosaas-brain/Dockerfile").unlink()
    report = await world.doctor()
    assert not_passed(report) == {"source brain-gateway": False}
    assert "bizosaas/ai/services/bizosaas-brain/Dockerfile" in row(report, "source brain-gateway").detail


async def test_invalid_services_toml_is_a_failed_row_not_a_crash(world):
    """A services.toml that does not validate gives a failed row with its message; nothing else runs."""
    path = world.write_config()
    path.write_text(path.read_text().replace('image_prefix = "bizosaas-"', 'image_prefix = "bizosaas-"\nmirror = 1'))
    report = await world.doctor()
    assert not report.ok
    check = row(report, "services.toml")
    assert check.ok is False
    assert "registry.mirror: unknown key" in check.detail
    assert "python -m pipeline plan" in check.fix
    assert row(report, "everything else").ok is None
    assert "FAIL  services.toml" in render(report)
    assert world.dokploy.double.requests == []


async def test_unknown_environment_fails_with_the_defined_ones(world):
    """An environment services.toml does not define fails and lists the defined ones."""
    report = await world.doctor(environment="qa")
    assert row(report, "environment").ok is False
    assert "staging, production" in row(report, "environment").fix
    # The checks that do not depend on the environment still ran.
    assert row(report, "push brain-gateway").ok is True
    assert row(report, "dokploy key").ok is None


async def test_refused_token_fails_push_rows_with_the_flag(world):
    """A registry password the token service refuses fails each push row, saying which flag to pass."""
    report = await world.doctor(registry=world.registry_client(password="wrong-password"))
    assert not_passed(report) == {"push brain-gateway": False, "push client-portal": False}
    check = row(report, "push brain-gateway")
    assert "refused the credentials" in check.detail
    assert "--registry-token=env://GITHUB_TOKEN" in check.fix
    assert "wrong-password" not in render(report)


async def test_token_without_push_scope_fails_with_write_packages_fix(world):
    """A token that may only pull fails the push rows with the write:packages fix."""
    report = await world.doctor(registry=world.registry_client(reader=True))
    assert not_passed(report) == {"push brain-gateway": False, "push client-portal": False}
    check = row(report, "push client-portal")
    assert "bizoholic-digital/bizosaas-client-portal" in check.detail
    assert "write:packages" in check.fix


async def test_no_credentials_runs_local_checks_and_fails_remote_ones_with_the_fix(world):
    """Without token or key the local checks still pass and the remote ones fail with the flags to pass."""
    report = await world.doctor(registry=None, dokploy=None)
    assert not_passed(report) == {
        "registry push": False,
        "dokploy key": False,
        "staging/backend compose": None,
        "staging/backend env": None,
        "staging/frontend application": None,
    }
    assert "--registry-token=env://GITHUB_TOKEN" in row(report, "registry push").fix
    assert "--dokploy-key=env://DOKPLOY_API_KEY" in row(report, "dokploy key").fix
    assert row(report, "staging/backend compose").detail == "needs the Dokploy API key"
    # The URL is still checked (without a key), and the repository's compose file is read.
    assert row(report, "dokploy url").ok is True
    assert row(report, "staging/backend compose file brain-gateway").ok is True
    assert world.changes() == []


async def test_unreachable_dokploy_fails_the_url_and_skips_what_needs_it(world):
    """A closed loopback port fails the URL row with the fix; key and ids are skipped, not failed."""
    url = f"http://127.0.0.1:{closed_port()}"
    world.write_config(dokploy_url=url)
    report = await world.doctor(dokploy=world.dokploy_client(url=url))
    check = row(report, "dokploy url")
    assert check.ok is False
    assert url in check.detail
    assert "ConnectError" in check.detail
    assert "dokploy.url" in check.fix
    assert not_passed(report) == {
        "dokploy url": False,
        "dokploy key": None,
        "staging/backend compose": None,
        "staging/backend env": None,
        "staging/frontend application": None,
    }


async def test_something_else_at_the_url_is_not_taken_for_dokploy(world):
    """A server that answers but not as Dokploy does (no 401 without a key) fails the URL row."""
    url = f"{world.registry.registry.url}"
    report = await world.doctor(dokploy=world.dokploy_client(url=url), dokploy_url=url)
    assert row(report, "dokploy url").ok is False
    assert "does not look like Dokploy" in row(report, "dokploy url").detail


async def test_wrong_key_fails_the_key_row_and_skips_the_ids(world):
    """A key Dokploy refuses fails the key row with its fix; the ids cannot be checked."""
    report = await world.doctor(dokploy=world.dokploy_client(key="dk_wrong_key_Zq"))
    check = row(report, "dokploy key")
    assert check.ok is False
    assert "rejected the API key" in check.detail
    assert "--dokploy-key=env://DOKPLOY_API_KEY" in check.fix
    assert row(report, "staging/backend compose").ok is None
    assert row(report, "staging/backend compose").detail == "the API key was refused"
    assert "dk_wrong_key_Zq" not in render(report)


async def test_a_missing_services_toml_says_which_flag_points_at_it(world):
    """No file at the path: the fix is --config/--source, not editing a file that is not there."""
    report = await world.doctor(config_path=world.root / "nowhere" / "services.toml")
    check = row(report, "services.toml")
    assert check.ok is False
    assert check.fix.startswith("pass --config (or --source) pointing at services.toml:")


async def test_compose_files_dokploy_could_not_give_are_skipped_with_that_reason(world):
    """With the key refused and no compose_file in services.toml, the row says Dokploy was not read."""
    path = world.write_config()
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("compose_file")))
    report = await world.doctor(dokploy=world.dokploy_client(key="dk_wrong_key_Zq"))
    check = row(report, "staging/backend compose file")
    assert check.ok is None
    assert check.detail == (f"Dokploy's compose {world.backend_id} could not be read, and services.toml names no file")


async def test_unknown_compose_id_fails_with_where_to_find_it(world):
    """A compose id Dokploy does not have fails its row, saying where the right id is."""
    world.write_config(backend_id="noSuchCompose0000001")
    report = await world.doctor()
    assert not_passed(report) == {"staging/backend compose": False, "staging/backend env": None}
    check = row(report, "staging/backend compose")
    assert "noSuchCompose0000001" in check.detail
    assert "compose_id in services.toml" in check.fix
    assert row(report, "dokploy key").ok is True


async def test_all_environments_checks_every_target(world):
    """Without --environment the production targets are checked too."""
    world.write_config(production='\n[groups.targets.production]\ncompose_id = "prodComposeMissing01"\n')
    assert (await world.doctor()).ok
    report = await world.doctor(environment="")
    assert row(report, "production/backend compose").ok is False
    assert row(report, "staging/backend compose").ok is True


async def test_compose_file_not_referencing_the_image_fails(world):
    """A compose file that never names our image fails, with the line to add."""
    (world.root / COMPOSE_FILE).write_text("services:\n  saleor:\n    image: ghcr.io/saleor/saleor:3.20\n")
    report = await world.doctor()
    assert not_passed(report) == {"staging/backend compose file brain-gateway": False}
    check = row(report, "staging/backend compose file brain-gateway")
    assert COMPOSE_FILE in check.detail
    assert world.image("brain-gateway") in check.detail
    assert "image: ${BRAIN_GATEWAY_IMAGE}" in check.fix


async def test_moving_tag_without_pull_policy_fails_and_dokploys_file_wins(world):
    """Dokploy's own compose file is checked first; a moving tag there without pull_policy always fails."""
    moving = f"services:\n  brain:\n    image: {world.image('brain-gateway')}:staging\n"
    world.dokploy.double.composes[world.backend_id].compose_file = moving
    report = await world.doctor()
    check = row(report, "staging/backend compose file brain-gateway")
    assert check.ok is False
    assert "Dokploy's compose file" in check.detail
    assert "moving tag" in check.detail
    assert "never pulled" in check.detail
    assert "pull_policy: always" in check.fix

    world.dokploy.double.composes[world.backend_id].compose_file = moving + "    pull_policy: always\n"
    assert row(await world.doctor(), "staging/backend compose file brain-gateway").ok is True


async def test_other_variable_name_fails_with_both_ways_out(world):
    """A compose using another variable than services.toml's pins nothing; the fix names both options."""
    image = world.image("brain-gateway")
    (world.root / COMPOSE_FILE).write_text(f"services:\n  brain:\n    image: ${{BRAIN_IMAGE:-{image}:staging}}\n")
    check = row(await world.doctor(), "staging/backend compose file brain-gateway")
    assert check.ok is False
    assert "${BRAIN_IMAGE}" in check.detail
    assert 'image_variable = "BRAIN_IMAGE"' in check.fix


async def test_unparsable_compose_file_fails_naming_the_file(world):
    """Compose YAML that does not parse fails that row with the file named."""
    (world.root / COMPOSE_FILE).write_text("services: [brain\n")
    check = row(await world.doctor(), "staging/backend compose file")
    assert check.ok is False
    assert COMPOSE_FILE in check.detail
    assert "not valid YAML" in check.detail


async def test_a_compose_file_missing_from_the_source_says_where_it_was_looked_for(world):
    """No compose file at services.toml's path: the row names the path and both ways to fix it."""
    (world.root / COMPOSE_FILE).unlink()
    check = row(await world.doctor(), "staging/backend compose file")
    assert check.ok is False
    assert check.detail == f"{COMPOSE_FILE} is not under the source {str(world.root)!r}"
    assert check.fix == (
        "pass --source with the repository root, or fix compose_file in [groups.targets.staging] of 'backend'"
    )


async def test_image_variable_missing_from_env_fails_without_printing_values(world):
    """A compose env without the image variable fails, naming it, and never shows the env's values."""
    world.dokploy.double.composes[world.backend_id].env = f"DB_PASSWORD={DB_PASSWORD}\n"
    report = await world.doctor()
    assert not_passed(report) == {"staging/backend env": False}
    check = row(report, "staging/backend env")
    assert "BRAIN_GATEWAY_IMAGE" in check.detail
    assert "BRAIN_GATEWAY_IMAGE=<image>" in check.fix
    assert DB_PASSWORD not in render(report)


async def test_malformed_health_url_fails(world):
    """A health URL with a port out of range fails its group's row, quoting it."""
    world.write_config(health_url="http://127.0.0.1:99999/health")
    report = await world.doctor()
    assert not_passed(report) == {"staging/backend health urls": False}
    check = row(report, "staging/backend health urls")
    assert "99999" in check.detail
    assert "port outside 1-65535" in check.detail
    assert "[[groups.targets.staging.health]]" in check.fix


def test_health_url_problems_are_named():
    """Each kind of malformed health URL gets its own reason; good ones get none."""
    assert health_url_problem("http://192.0.2.10:8001/health") == ""  # TEST-NET-1: parsed, never contacted
    assert health_url_problem("https://api.example.com/") == ""
    assert "IPv4" in health_url_problem("http://999.1.1.1/")
    assert "host name" in health_url_problem("http://bad_host!/")
    assert "port 0" in health_url_problem("http://h:0/")
    assert "http" in health_url_problem("ftp://h/")


async def test_render_puts_each_fix_under_its_failure(world):
    """The table marks failures FAIL, skips skip, and prints the fix right under each failure."""
    report = await world.doctor(registry=None, dokploy=world.dokploy_client(key="dk_wrong_key_Zq"))
    lines = render(report).splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL  registry push"))
    assert "fix: pass --registry-token=env://GITHUB_TOKEN" in lines[fail + 1]
    assert any(line.startswith("skip  staging/backend compose ") for line in lines)
    assert lines[-1].startswith("2 failed (")
