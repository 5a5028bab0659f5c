"""Tests for pipeline.engine: how library mode finds an engine, without starting one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dagger
import pytest

from pipeline import engine


def fake_cli(directory: Path, version: str = engine.ENGINE_VERSION) -> Path:
    """A ``dagger`` that answers ``version`` as the real CLI does, and does nothing else."""
    cli = directory / "dagger"
    cli.write_text(
        '#!/bin/sh\n[ "$1" = version ] && '
        f'echo "dagger v{version} (registry.dagger.io/engine:v{version}) linux/amd64"\nexit 0\n'
    )
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    return cli


def test_a_cli_on_path_is_handed_to_the_sdk(tmp_path):
    """The SDK only runs _EXPERIMENTAL_DAGGER_CLI_BIN or downloads its own: the CLI found is named there."""
    cli = fake_cli(tmp_path)
    env = {"PATH": str(tmp_path)}
    assert engine.engine_reachable(env) == f"the CLI at {cli}"
    assert engine.cli_environment(env) == {"_EXPERIMENTAL_DAGGER_CLI_BIN": str(cli)}


@pytest.mark.parametrize(
    "given",
    [
        {"DAGGER_SESSION_PORT": "1234", "DAGGER_SESSION_TOKEN": "t"},
        {"_EXPERIMENTAL_DAGGER_CLI_BIN": "/opt/dagger"},
    ],
    ids=["inside a session", "CLI already named"],
)
def test_nothing_is_overridden_when_the_sdk_already_knows_its_engine(tmp_path, given):
    fake_cli(tmp_path)
    assert engine.cli_environment({"PATH": str(tmp_path), **given}) == {}


def test_no_cli_means_no_variable(tmp_path):
    assert engine.cli_environment({"PATH": str(tmp_path)}) == {}


async def test_connected_points_the_sdk_at_the_cli_on_path(tmp_path, monkeypatch):
    """connected() sets the variable before the SDK provisions, then opens the session."""
    cli = fake_cli(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("DAGGER_SESSION_PORT", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.setenv(name, "")  # recorded, so the variable connected() sets is undone too
        monkeypatch.delenv(name)
    seen: list[str | None] = []

    class Opened(Exception):
        pass

    def connection(config: object) -> object:
        seen.append(os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN"))
        raise Opened

    monkeypatch.setattr(dagger, "connection", connection)
    with pytest.raises(Opened):
        async with engine.connected():
            pass
    assert seen == [str(cli)]


def test_the_expected_cli_version_gives_no_warning(tmp_path):
    assert engine.version_mismatch(str(fake_cli(tmp_path))) == ""


def test_another_cli_version_is_named_with_the_one_to_install(tmp_path):
    """A CLI of another release may start an engine without the calls we make: say which to install."""
    cli = fake_cli(tmp_path, "0.19.2")
    assert engine.version_mismatch(str(cli)) == (
        f"warning: {cli} is dagger 0.19.2, but this pipeline is built and tested for "
        f"{engine.ENGINE_VERSION}: install dagger {engine.ENGINE_VERSION} if calls fail"
    )


def test_a_cli_that_cannot_run_is_a_warning_not_a_crash(tmp_path):
    broken = tmp_path / "dagger"
    broken.write_text("not a program")
    assert engine.version_mismatch(str(broken)).startswith(f"warning: could not ask {broken} for its version")


async def test_connected_warns_about_another_cli_version(tmp_path, monkeypatch, capsys):
    """The warning reaches stderr before the session opens."""
    fake_cli(tmp_path, "0.20.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("DAGGER_SESSION_PORT", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    class Opened(Exception):
        pass

    def connection(config: object) -> object:
        raise Opened

    monkeypatch.setattr(dagger, "connection", connection)
    with pytest.raises(Opened):
        async with engine.connected():
            pass
    assert "is dagger 0.20.0, but this pipeline is built and tested for" in capsys.readouterr().err
