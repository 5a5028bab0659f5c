"""End-to-end tests run against a real Dagger engine, and skip with the reason where there is none.

An engine is reachable when this process runs inside ``dagger run`` (DAGGER_SESSION_PORT),
when a dagger CLI is on PATH or named by _EXPERIMENTAL_DAGGER_CLI_BIN, or when
_EXPERIMENTAL_DAGGER_RUNNER_HOST names a running engine. The SDK would otherwise try
to download the CLI, which hangs on a machine without internet, so we look first.

``make e2e`` sets PIPELINE_E2E_REQUIRED: there, a missing engine is a failure, since
the only point of that command is to run these tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.engine import cli_environment, engine_reachable

NO_ENGINE = (
    "no Dagger engine reachable: install the dagger CLI 0.21.11 "
    "(or set _EXPERIMENTAL_DAGGER_RUNNER_HOST) and run `make e2e`"
)
BUSYBOX = Path("/bin/busybox")
NO_BUSYBOX = "the fixture images copy a static busybox from /bin/busybox: apt-get install busybox-static"


@pytest.fixture(autouse=True)
def _needs_an_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip e2e-marked tests here, saying how to run them, when no engine is reachable."""
    if request.node.get_closest_marker("e2e") is None:
        return
    missing = NO_ENGINE if not engine_reachable() else NO_BUSYBOX if not BUSYBOX.is_file() else ""
    if missing and os.environ.get("PIPELINE_E2E_REQUIRED"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    # The SDK downloads its own CLI unless told which one to run: use the one found.
    for name, value in cli_environment().items():
        monkeypatch.setenv(name, value)
