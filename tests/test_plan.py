"""The plan: environment, tags, deploy order, content keys and labels, before anything runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import changes
from pipeline.config import Config, load, parse
from pipeline.content import content_key
from pipeline.errors import ConfigError, UsageError
from pipeline.gitinfo import GitContext
from pipeline.plan import make_plan, render_json, render_table, to_dict
from tests.support.sources import REAL_CONFIG, SHA, base_config, monorepo, to_toml

SEVEN = [
    "brain-gateway",
    "bizoholic-frontend",
    "coreldove-frontend",
    "client-portal",
    "admin-dashboard",
    "business-directory",
    "thrillring-gaming",
]
FRONTENDS = SEVEN[1:]
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def push(branch: str, *, dirty: bool = False) -> GitContext:
    return GitContext(branch=branch, sha=SHA, event="push", dirty=dirty, origin="arguments")


@pytest.fixture(scope="module")
def real() -> Config:
    return load(REAL_CONFIG)


def base() -> Config:
    return parse(to_toml(base_config()))


def test_a_push_to_staging_plans_all_seven_for_staging(real: Config) -> None:
    """staging → environment staging, tags staging and staging-<sha> (once), backend then frontend."""
    data = json.loads(render_json(make_plan(real, push("staging"))))
    assert data["environment"] == "staging"
    assert [s["name"] for s in data["services"]] == SEVEN
    assert {tuple(s["tags"]) for s in data["services"]} == {("staging", "staging-0123456")}
    gateway = data["services"][0]
    assert {k: gateway[k] for k in ("image", "context", "dockerfile", "group")} == {
        "image": "ghcr.io/bizoholic-digital/bizosaas-brain-gateway",
        "context": "bizosaas/ai/services/bizosaas-brain",
        "dockerfile": "bizosaas/ai/services/bizosaas-brain/Dockerfile",
        "group": "backend",
    }
    assert data["services"][1]["dockerfile"] == "bizosaas/frontend/apps/bizoholic-frontend/Dockerfile.production"
    assert [(g["name"], g["target"], g["services"]) for g in data["groups"]] == [
        ("backend", {"kind": "compose", "id": "uimFISkhg1KACigb2CaGz"}, ["brain-gateway"]),
        ("frontend", {"kind": "compose", "id": "hU2yhYOqv3_ftKGGvcAiv"}, FRONTENDS),
    ]
    # The seed's four backend checks (gateway, Saleor, Wagtail, auth), by port and path; the
    # suite never spells the user's production host, so the host is read from the config.
    backend_urls = [h["url"] for h in data["groups"][0]["health"]]
    host = backend_urls[0].split("//")[1].split(":")[0]
    assert backend_urls == [
        f"http://{host}:8001/health",
        f"http://{host}:8000/",
        f"http://{host}:8002/",
        f"http://{host}:8006/health",
    ]
    assert len(data["groups"][1]["health"]) == 4
    assert data["git"] == {"branch": "staging", "sha": SHA, "event": "push", "dirty": False, "from": "arguments"}


def test_a_push_to_main_plans_production(real: Config) -> None:
    """main → production, tags latest and main-<sha>, the same groups in order but no targets yet."""
    plan = make_plan(real, push("main"))
    data = to_dict(plan)
    assert data["environment"] == "production"
    assert {s.tags for s in plan.services} == {("latest", "main-0123456")}
    assert [(g["name"], g["target"], g["health"]) for g in data["groups"]] == [  # type: ignore[attr-defined]
        ("backend", None, []),
        ("frontend", None, []),
    ]
    table = render_table(plan)
    assert table.splitlines()[0] == "plan: production from branch main at 0123456 (push, from arguments)"
    assert "  1. backend -> no target for production (brain-gateway)" in table.splitlines()


def test_the_table_lists_services_and_the_deploy_order(real: Config) -> None:
    """The table has one row per service and the groups numbered in deploy order with their health checks."""
    lines = render_table(make_plan(real, push("staging"))).splitlines()
    assert lines[0] == "plan: staging from branch staging at 0123456 (push, from arguments)"
    assert lines[2].split() == ["SERVICE", "GROUP", "IMAGE", "TAGS", "CONTENT", "ACTION"]
    assert [line.split()[0] for line in lines[3:10]] == SEVEN
    order = [line for line in lines if re.match(r"  \d\. ", line)]
    assert order == [
        "  1. backend -> compose uimFISkhg1KACigb2CaGz (brain-gateway)",
        f"  2. frontend -> compose hU2yhYOqv3_ftKGGvcAiv ({', '.join(FRONTENDS)})",
    ]
    gateway_check = real.groups[0].targets["staging"].health[0].url
    assert gateway_check.endswith(":8001/health")
    assert f"       health: {gateway_check} expects 200 within 120s" in lines
    assert lines[-1] == "note: no source given: content keys not computed (pass --source with the repository root)"


@pytest.mark.parametrize(
    ("services", "names", "groups"),
    [
        pytest.param(
            "client-portal,brain-gateway",
            ["brain-gateway", "client-portal"],
            [
                ("backend", ("brain-gateway",)),
                ("frontend", ("client-portal",)),
            ],
            id="config-order-kept",
        ),
        pytest.param(
            ["admin-dashboard"], ["admin-dashboard"], [("frontend", ("admin-dashboard",))], id="frontend-only"
        ),
        pytest.param(" brain-gateway , ", ["brain-gateway"], [("backend", ("brain-gateway",))], id="spaces-and-commas"),
        pytest.param("", SEVEN, [("backend", ("brain-gateway",)), ("frontend", tuple(FRONTENDS))], id="empty-is-all"),
    ],
)
def test_a_services_subset_keeps_only_their_groups(
    real: Config, services: str | list[str], names: list[str], groups: list[tuple[str, tuple[str, ...]]]
) -> None:
    """--services plans only those services, in config order, and only the groups they deploy with."""
    plan = make_plan(real, push("staging"), services=services)
    assert [s.name for s in plan.services] == names
    assert [(g.name, g.services) for g in plan.groups] == groups


@pytest.mark.parametrize(
    ("kwargs", "branch", "expected"),
    [
        pytest.param(
            {"services": "brain-gateway,nope"},
            "staging",
            f"unknown service nope; valid services: {', '.join(SEVEN)}",
            id="unknown-service",
        ),
        pytest.param(
            {"services": ["nope", "nada"]},
            "staging",
            f"unknown services nope, nada; valid services: {', '.join(SEVEN)}",
            id="unknown-services",
        ),
        pytest.param(
            {"environment": "qa"},
            "staging",
            f"unknown environment 'qa'; defined in {REAL_CONFIG}: staging, production",
            id="unknown-environment",
        ),
        pytest.param(
            {},
            "feature/login",
            "branch 'feature/login' deploys to no environment (staging -> staging, main -> production); "
            "pass --environment to choose one, or --branch",
            id="branch-without-environment",
        ),
    ],
)
def test_plan_usage_errors(real: Config, kwargs: dict[str, Any], branch: str, expected: str) -> None:
    """Unknown services or environments, and branches that deploy nowhere, are UsageErrors saying what is valid."""
    with pytest.raises(UsageError) as caught:
        make_plan(real, push(branch), **kwargs)
    assert str(caught.value) == expected


def test_an_explicit_environment_wins_over_the_branch(real: Config) -> None:
    """A feature branch planned for staging gets staging's templates with its own branch name."""
    plan = make_plan(real, push("feature/Login"), environment="staging")
    assert plan.environment == "staging"
    assert plan.services[0].tags == ("staging", "staging-0123456", "feature-login-0123456")


def test_with_a_source_tree_each_service_gets_its_content_key_and_tag(tmp_path: Path) -> None:
    """Given --source, the plan checks the tree and adds each service's content key and src- tag."""
    config = parse(to_toml(base_config()))
    monorepo(tmp_path)
    plan = make_plan(config, push("staging"), source=tmp_path, now=NOW)
    for service in plan.services:
        assert service.content_key == content_key(config.services[service.name], tmp_path)
        assert re.fullmatch(r"[0-9a-f]{64}", service.content_key)
        assert service.content_tag == "src-" + service.content_key[:12]
        assert service.action == "build"
        assert service.addresses()[0] == f"{service.image}:{service.content_tag}"
        assert service.addresses()[1:] == [f"{service.image}:{t}" for t in service.tags]
    assert plan.services[0].content_key != plan.services[1].content_key
    assert plan.notes == ()
    assert plan.source == str(tmp_path)
    assert to_dict(plan)["services"][0]["content_tag"] == plan.services[0].content_tag  # type: ignore[index]


def test_a_source_tree_that_does_not_match_the_config_stops_the_plan(tmp_path: Path) -> None:
    """A missing Dockerfile under --source is a ConfigError before any key is computed."""
    monorepo(tmp_path)
    (tmp_path / "apps/web/Dockerfile.production").unlink()
    with pytest.raises(ConfigError, match=r"^services\.toml: services\.web\.dockerfile: "):
        make_plan(base(), push("staging"), source=tmp_path)
    plan = make_plan(base(), push("staging"), source=tmp_path, services="api")
    assert [s.name for s in plan.services] == ["api"]


def test_labels_name_the_revision_time_title_and_source() -> None:
    """OCI labels carry the commit, the creation time, the image title and the source URL."""
    plan = make_plan(base(), push("staging"), now=NOW)
    assert dict(plan.services[0].labels) == {
        "org.opencontainers.image.title": "shop-api",
        "org.opencontainers.image.revision": SHA,
        "org.opencontainers.image.created": "2024-05-06T07:08:09Z",
        "org.opencontainers.image.source": "https://example.test/acme/shop",
    }


def test_without_a_source_url_there_is_no_source_label() -> None:
    """A config without [project] source_url gives no source label."""
    data = base_config()
    del data["project"]
    labels = make_plan(parse(to_toml(data)), push("staging")).services[0].labels
    assert "org.opencontainers.image.source" not in labels


def test_the_real_plan_json_round_trips_for_both_branches(real: Config) -> None:
    """render_json is valid JSON equal to to_dict, for staging and main."""
    for branch in ("staging", "main"):
        plan = make_plan(real, push(branch))
        assert json.loads(render_json(plan)) == to_dict(plan)


def test_plan_service_lookup_and_actions() -> None:
    """Plan.service finds a selected service or lists the selected ones; with_actions fills decisions in."""
    plan = make_plan(base(), push("staging"), services="web")
    with pytest.raises(UsageError) as caught:
        plan.service("api")
    assert str(caught.value) == "unknown service 'api'; valid services: web"
    decided = plan.with_actions({"web": "reuse sha256:" + "1" * 64, "api": "build"})
    assert decided.service("web").action == "reuse sha256:" + "1" * 64
    assert plan.service("web").action == "build (content unknown)"


def test_unchecked_gives_every_keyed_service_the_same_reason(tmp_path: Path) -> None:
    """changes.unchecked answers 'build (<reason>)' for each service with a content tag, and nothing without one."""
    monorepo(tmp_path)
    keyed = make_plan(base(), push("staging"), source=tmp_path)
    assert changes.unchecked(keyed, "not checked: --offline") == {
        "api": "build (not checked: --offline)",
        "web": "build (not checked: --offline)",
    }
    assert changes.unchecked(make_plan(base(), push("staging")), "not checked: --offline") == {}
    table = render_table(keyed.with_actions(changes.unchecked(keyed, "not checked: --offline")))
    assert "build (not checked: --offline)" in table
    assert keyed.services[0].content_tag in table
