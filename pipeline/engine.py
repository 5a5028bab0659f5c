"""Connecting to a Dagger engine from library mode (``python -m pipeline``).

The SDK would otherwise try to download the CLI when none is installed, which
on a machine without internet hangs until a timeout. So we look first, say how
to get an engine when there is none, and point the SDK at a CLI found on PATH
(it never looks there itself).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.content import SOURCE_IGNORE
from pipeline.errors import UsageError
from pipeline.secret import SecretValue

if TYPE_CHECKING:
    import dagger

ENGINE_VERSION = "0.21.11"

NO_ENGINE = (
    f"no Dagger engine reachable: install the dagger CLI {ENGINE_VERSION} "
    "(https://docs.dagger.io/install) or set _EXPERIMENTAL_DAGGER_RUNNER_HOST, "
    "or run `dagger call ...` instead"
)


def engine_reachable(env: Mapping[str, str] | None = None) -> str:
    """How an engine would be reached, or "" when there is none."""
    env = os.environ if env is None else env
    if env.get("DAGGER_SESSION_PORT"):
        return "the current dagger session"
    if env.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        return f"the CLI at {env['_EXPERIMENTAL_DAGGER_CLI_BIN']}"
    cli = shutil.which("dagger", path=env.get("PATH"))
    if cli:
        return f"the CLI at {cli}"
    if env.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST"):
        # The SDK fetches the CLI matching its version, which then uses this engine.
        return f"the engine at {env['_EXPERIMENTAL_DAGGER_RUNNER_HOST']}"
    return ""


def cli_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variable that makes the SDK run the dagger CLI found on PATH, or {} when none is needed.

    The SDK never looks at PATH: without _EXPERIMENTAL_DAGGER_CLI_BIN it downloads its
    own CLI (dagger/provisioning/_engine.py ``get_cli``), which is what we check for first.
    """
    env = os.environ if env is None else env
    if env.get("DAGGER_SESSION_PORT") or env.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        return {}
    cli = shutil.which("dagger", path=env.get("PATH"))
    return {"_EXPERIMENTAL_DAGGER_CLI_BIN": cli} if cli else {}


def version_mismatch(cli: str, *, timeout_s: float = 15.0) -> str:
    """A warning when the dagger CLI at ``cli`` is not the version the SDK was built for, else "".

    The SDK speaks the API of its own release; another CLI starts another engine,
    whose schema may lack what the pipeline calls. Not an error: patch releases mix.
    """
    try:
        answer = subprocess.run([cli, "version"], capture_output=True, text=True, timeout=timeout_s, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"warning: could not ask {cli} for its version ({type(e).__name__}); expected {ENGINE_VERSION}"
    found = re.search(r"\bv(\d+\.\d+\.\d+\S*)", answer)
    if found is None or found.group(1) == ENGINE_VERSION:
        return ""
    return (
        f"warning: {cli} is dagger {found.group(1)}, but this pipeline is built and tested for "
        f"{ENGINE_VERSION}: install dagger {ENGINE_VERSION} if calls fail"
    )


@asynccontextmanager
async def connected() -> AsyncIterator[None]:
    """An open engine session, with its progress on stderr."""
    if not engine_reachable():
        raise UsageError(NO_ENGINE)
    os.environ.update(cli_environment())
    cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN", "")
    if cli and not os.environ.get("DAGGER_SESSION_PORT") and (warning := version_mismatch(cli)):
        print(warning, file=sys.stderr)
    import dagger  # noqa: PLC0415 - the SDK loads in ~1 s; only engine runs pay for it.

    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        yield


def host_source(path: Path) -> dagger.Directory:
    """The host's source directory, without what builds never need."""
    from dagger import dag  # noqa: PLC0415

    return dag.host().directory(str(path.resolve()), exclude=SOURCE_IGNORE)


def secret(value: SecretValue | None) -> dagger.Secret | None:
    """A SecretValue as a Dagger secret, named after where it came from."""
    if value is None:
        return None
    from dagger import dag  # noqa: PLC0415

    return dag.set_secret(value.name.strip("-").replace("-", "_") or "secret", value.reveal())
