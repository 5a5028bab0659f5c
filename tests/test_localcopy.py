"""Tests for pipeline.localcopy: what a module call copies out of the uploaded source.

The engine double answers ``exists`` and ``export`` from a real tree on disk, the way
the engine answers them from the uploaded directory, so what lands is real files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagger
import pytest

from pipeline.config import load
from pipeline.errors import ConfigError
from pipeline.localcopy import copy_for_run, outermost
from tests.support.engine_double import EngineDouble, Query
from tests.support.world import BACKEND_ID, CONTEXTS, FRONTEND_ID, services_toml, write_sources

COMPOSE = "deploy/backend-staging.yml"


def _picked(q: Query) -> tuple[Path, str]:
    """The host root and the path selected under it: host > directory(root) > ... > file|directory(path)."""
    root = Path(q[1][1]["path"])
    return root, q[-2][1]["path"] if q[-1][0] == "export" else q[-1][1]["path"]


def _exists(q: Query) -> bool:
    root, path = _picked(q)
    kind: Any = q[-1][1].get("expectedType")
    kind = getattr(kind, "value", kind)
    target = root / path
    return target.is_dir() if kind == "DIRECTORY_TYPE" else target.is_file()


def _export(q: Query) -> str:
    root, path = _picked(q)
    destination = q[-1][1]["path"]
    if q[-2][0] == "file":
        shutil.copy2(root / path, destination)
    else:
        shutil.copytree(root / path, destination, dirs_exist_ok=True)
    return destination


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A monorepo: services.toml (one compose file named), three contexts, and a big unrelated tree."""
    root = tmp_path / "repo"
    root.mkdir()
    toml = services_toml(registry_host="127.0.0.1:5000", dokploy_url="http://127.0.0.1:3000", vps_url="http://x")
    toml = toml.replace(f'compose_id = "{BACKEND_ID}"', f'compose_id = "{BACKEND_ID}"\ncompose_file = "{COMPOSE}"', 1)
    toml = toml.replace(f'compose_id = "{FRONTEND_ID}"', f'compose_id = "{FRONTEND_ID}"\ncompose_file = "gone.yml"', 1)
    (root / "services.toml").write_text(toml)
    write_sources(root)
    (root / "deploy").mkdir()
    (root / COMPOSE).write_text("services: {}\n")
    (root / "docs" / "videos").mkdir(parents=True)
    (root / "docs" / "videos" / "demo.mp4").write_bytes(b"\0" * 4096)
    return root


@pytest.fixture
def from_tree(engine: EngineDouble) -> EngineDouble:
    engine.answers["exists"] = _exists
    engine.answers["export"] = _export
    return engine


def copied(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


async def test_one_service_copies_its_context_and_services_toml_only(repo, from_tree):
    """build --service=X reads services.toml and X's context: nothing else leaves the engine."""
    local = await copy_for_run(
        dagger.Client().host().directory(str(repo)), config="services.toml", services=["brain-gateway"]
    )
    context = CONTEXTS["brain-gateway"][0]
    assert copied(local) == {"services.toml", f"{context}/Dockerfile", f"{context}/app.py"}
    assert load(local / "services.toml").services["brain-gateway"].context == context


async def test_all_services_copy_every_context_and_an_empty_selection_means_all(repo, from_tree):
    """No selection, or Actions' empty input, copies every context (each once)."""
    source = dagger.Client().host().directory(str(repo))
    for services in (None, [""]):
        local = await copy_for_run(source, config="services.toml", services=services)
        assert {p.split("/app.py")[0] for p in copied(local) if p.endswith("app.py")} == {
            context for context, _ in CONTEXTS.values()
        }
        assert not any(p.startswith(("docs/", "deploy/")) for p in copied(local))


async def test_doctor_gets_the_compose_files_that_exist(repo, from_tree):
    """Compose files named in services.toml come along; one the source lacks is left for doctor to report."""
    source = dagger.Client().host().directory(str(repo))
    local = await copy_for_run(source, config="services.toml", compose_files=True)
    assert COMPOSE in copied(local)
    asked = [q[-1][1]["path"] for q in from_tree.asked_for("exists")]
    exported = [q[-2][1]["path"] for q in from_tree.asked_for("export")]
    assert "gone.yml" in asked
    assert "gone.yml" not in exported


async def test_calls_that_need_no_context_copy_services_toml_alone(repo, from_tree):
    """promote, prune and status read the config only."""
    local = await copy_for_run(dagger.Client().host().directory(str(repo)), config="services.toml", contexts=False)
    assert copied(local) == {"services.toml"}
    assert len(from_tree.asked_for("export")) == 1


async def test_a_missing_or_broken_config_is_left_to_the_loader_to_report(repo, from_tree):
    """No services.toml: nothing is copied and load() later names the file and the flag."""
    source = dagger.Client().host().directory(str(repo))
    assert copied(await copy_for_run(source, config="elsewhere.toml")) == set()
    (repo / "services.toml").write_text("[services\n")
    assert copied(await copy_for_run(source, config="services.toml")) == {"services.toml"}


async def test_unknown_services_copy_no_context(repo, from_tree):
    """An unknown name is the plan's to refuse (with the valid names), not a failed export here."""
    local = await copy_for_run(dagger.Client().host().directory(str(repo)), config="services.toml", services=["nope"])
    assert copied(local) == {"services.toml"}


@pytest.mark.parametrize("config", ["/services.toml", "../services.toml", "ci/../../x.toml"])
async def test_a_config_outside_the_source_is_refused(repo, from_tree, config):
    """--config names a file of the source: nothing outside it is read or written."""
    with pytest.raises(ConfigError, match="--config must be a path inside the source"):
        await copy_for_run(dagger.Client().host().directory(str(repo)), config=config)
    assert from_tree.requests == []


async def test_a_root_context_copies_the_whole_source_once(repo, from_tree):
    """A service built from the repository root: one export of '.', nothing nested on top of it."""
    text = (repo / "services.toml").read_text()
    (repo / "services.toml").write_text(text.replace(f'context = "{CONTEXTS["client-portal"][0]}"', 'context = "."'))
    (repo / "Dockerfile").write_text("FROM scratch\n")
    local = await copy_for_run(dagger.Client().host().directory(str(repo)), config="services.toml")
    assert [q[-2][1]["path"] for q in from_tree.asked_for("export")] == ["services.toml", "."]
    assert "docs/videos/demo.mp4" in copied(local)


def test_outermost_keeps_only_directories_no_other_contains():
    assert outermost(["a/b", "a", "c/d", "c/d/e", "cd"]) == ["a", "c/d", "cd"]
    assert outermost(["x", ".", "y/z"]) == ["."]
