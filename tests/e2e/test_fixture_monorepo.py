"""The e2e fixture monorepo stays a valid config that exercises every case the e2e tests rely on.

These run without an engine, so a broken fixture shows up in every CI run, not only
where the end-to-end tests can run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import config
from pipeline.config import dockerfile_stages
from tests.e2e.conftest import BUSYBOX, is_static_elf
from tests.e2e.monorepo import CONTEXTS, ENVIRONMENT, FIXTURE, SHA, plans, prepare


def prepared(tmp_path: Path) -> Path:
    fake_busybox = tmp_path / "busybox"
    fake_busybox.write_bytes(b"\x7fELF stand-in for the static busybox")
    return prepare(tmp_path / "monorepo", registry_host="127.0.0.1:5999", busybox=fake_busybox)


def test_the_fixture_plans_every_service_against_the_given_registry(tmp_path):
    """All six services plan, with images and tags in the registry the test passes."""
    found = plans(prepared(tmp_path))
    assert list(found) == ["plain", "multistage", "argtarget", "failing-tests", "needs-db", "crash-on-boot"]
    for name, plan in found.items():
        assert plan.image == f"127.0.0.1:5999/e2e/{name}"
        assert plan.tags == (ENVIRONMENT, f"{ENVIRONMENT}-{SHA[:7]}")
        assert plan.content_tag.startswith("src-")
        assert plan.labels["org.opencontainers.image.source"] == "https://github.com/bizoholic-digital/bizosaas"


def test_every_context_gets_busybox_and_no_registry_placeholder_is_left(tmp_path):
    """The copy is buildable offline: busybox in each context, REGISTRY_HOST replaced."""
    root = prepared(tmp_path)
    assert all((root / context / "busybox").is_file() for context in CONTEXTS)
    assert "REGISTRY_HOST" not in (root / "services.toml").read_text()
    assert not (FIXTURE / "services" / "plain" / "busybox").exists()


def test_the_fixture_covers_each_case_the_e2e_tests_check(tmp_path):
    """Multi-stage with a secret, an arg with a non-final target, passing, failing, service and crash cases."""
    services = config.load(prepared(tmp_path) / "services.toml").services
    multistage = services["multistage"]
    assert dockerfile_stages((FIXTURE / multistage.dockerfile_path).read_text()) == ["build"]
    assert (FIXTURE / multistage.context / ".dockerignore").read_text() == "ignored.txt\n"
    assert multistage.secrets == {"e2e_token": "env://PIPELINE_E2E_BUILD_TOKEN"}
    argtarget = services["argtarget"]
    assert argtarget.build_args == {"GREETING": "hello-from-e2e"}
    assert dockerfile_stages((FIXTURE / argtarget.dockerfile_path).read_text())[-1] != argtarget.target
    assert services["failing-tests"].test is not None
    assert services["failing-tests"].test.reports == "/reports"
    needs_db = services["needs-db"].test
    assert needs_db is not None
    assert [d.name for d in needs_db.services] == ["db"]
    assert services["crash-on-boot"].smoke is not None
    assert services["plain"].smoke is not None


def test_no_fixture_image_pulls_anything():
    """Every FROM is scratch or an earlier stage, so the e2e builds work without Docker Hub."""
    dockerfiles = sorted(FIXTURE.rglob("Dockerfile"))
    assert len(dockerfiles) == len(CONTEXTS)
    for dockerfile in dockerfiles:
        stages: list[str] = []
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words and words[0].upper() == "FROM":
                assert words[1] in ("scratch", *stages), f"{dockerfile} pulls {words[1]}"
                if len(words) == 4 and words[2].upper() == "AS":
                    stages.append(words[3])


def test_only_a_static_busybox_counts_as_one(tmp_path):
    """The fixtures run busybox FROM scratch: a dynamically linked one must not pass for it."""
    assert is_static_elf(BUSYBOX), "apt-get install busybox-static (.ci/run does)"
    assert not is_static_elf(Path(sys.executable).resolve())
    assert not is_static_elf(Path("/bin/sh").resolve())
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    assert not is_static_elf(tmp_path / "script")
    assert not is_static_elf(tmp_path / "missing")
