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
import warnings
from pathlib import Path
from typing import Literal

import pytest

from pipeline.engine import cli_environment, engine_reachable, version_mismatch

NO_ENGINE = (
    "no Dagger engine reachable: install the dagger CLI 0.21.11 "
    "(or set _EXPERIMENTAL_DAGGER_RUNNER_HOST) and run `make e2e`"
)
BUSYBOX = Path("/bin/busybox")
NO_BUSYBOX = "the fixture images copy a static busybox from /bin/busybox: apt-get install busybox-static"
_PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """An ELF executable without a program interpreter: it runs in a FROM scratch image.

    Debian's plain ``busybox`` package (and Alpine's) link dynamically, and would fail
    every fixture build with "no such file or directory" instead of skipping here.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return False
    wide = data[4] == 2
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"

    def number(offset: int, size: int) -> int:
        return int.from_bytes(data[offset : offset + size], order)

    table, entry_size, entries = (
        (number(0x20, 8), number(0x36, 2), number(0x38, 2))
        if wide
        else (number(0x1C, 4), number(0x2A, 2), number(0x2C, 2))
    )
    return all(number(table + i * entry_size, 4) != _PT_INTERP for i in range(entries))


@pytest.fixture(autouse=True)
def _needs_an_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip e2e-marked tests here, saying how to run them, when no engine is reachable."""
    if request.node.get_closest_marker("e2e") is None:
        return
    missing = NO_ENGINE if not engine_reachable() else NO_BUSYBOX if not is_static_elf(BUSYBOX) else ""
    if missing and os.environ.get("PIPELINE_E2E_REQUIRED"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    # The SDK downloads its own CLI unless told which one to run: use the one found.
    for name, value in cli_environment().items():
        monkeypatch.setenv(name, value)
        if mismatch := version_mismatch(value):
            warnings.warn(mismatch, stacklevel=1)
