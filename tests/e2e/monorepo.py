"""The fixture monorepo, copied to a temp dir and made buildable without pulling anything."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline import config
from pipeline.gitinfo import GitContext
from pipeline.plan import ServicePlan, make_plan

FIXTURE = Path(__file__).parent / "fixtures" / "monorepo"
ENVIRONMENT = "e2e"
SHA = "e2e0000" + "1" * 33
# Every context that a Dockerfile builds; each gets the static busybox as ./busybox.
CONTEXTS = (
    "services/plain",
    "services/multistage",
    "services/argtarget",
    "services/failing-tests",
    "services/needs-db",
    "services/crash-on-boot",
    "support/fake-db",
)


def prepare(destination: Path, *, registry_host: str, busybox: Path) -> Path:
    """Copy the fixture to ``destination``, add busybox to each context, point it at the registry."""
    shutil.copytree(FIXTURE, destination)
    for context in CONTEXTS:
        shutil.copy2(busybox, destination / context / "busybox")
    toml = destination / "services.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("REGISTRY_HOST", registry_host), encoding="utf-8")
    return destination


def plans(root: Path, *services: str) -> dict[str, ServicePlan]:
    """The plan of the named services (all when none), keyed by name, in config order."""
    loaded = config.load(root / "services.toml")
    plan = make_plan(
        loaded,
        GitContext(branch="main", sha=SHA),
        environment=ENVIRONMENT,
        services=list(services) or None,
        source=root,
    )
    return {service.name: service for service in plan.services}
