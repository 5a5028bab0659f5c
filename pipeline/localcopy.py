"""The files a module call reads itself, copied out of the uploaded source.

Inside the module runtime the source is a ``dagger.Directory``: builds read it in
the engine, but planning, content keys and doctor read files with Python. So
those files are exported into the runtime container first: services.toml, the
build context of each service the call is about, and (for doctor) the compose
files. Not the whole repository: in a large monorepo most of it is neither.

A path that is not in the source is left out rather than failing here; the
reader that needs it (config validation, doctor) then says what is missing.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import anyio
import dagger

from pipeline.config import UPLOAD_COPY_PREFIX, load
from pipeline.errors import ConfigError, UsageError
from pipeline.plan import select_services


async def copy_for_run(
    source: dagger.Directory,
    *,
    config: str,
    services: Sequence[str] | None = None,
    contexts: bool = True,
    compose_files: bool = False,
) -> Path:
    """A local directory holding ``config`` and what the call reads of the source.

    ``services`` narrows the contexts copied, read as the plan reads it (empty: all).
    """
    where = PurePosixPath(config)
    if where.is_absolute() or ".." in where.parts:
        raise ConfigError(config, "", "--config must be a path inside the source, like services.toml")
    target = Path(tempfile.mkdtemp(prefix=UPLOAD_COPY_PREFIX))
    await _export(source, config, target, directory=False)
    if not (contexts or compose_files):
        return target
    try:
        loaded = load(target / config)
    except ConfigError:
        return target  # the caller loads it again and reports the mistake
    directories: list[str] = []
    if contexts:
        try:
            names = select_services(loaded, services)
        except UsageError:
            names = []  # unknown names: the plan refuses them, listing the valid ones
        directories = outermost([loaded.services[n].context for n in names])
    files: list[str] = []
    if compose_files:
        files = sorted({t.compose_file for g in loaded.groups for t in g.targets.values() if t.compose_file})
    async with anyio.create_task_group() as group:
        for path in directories:
            group.start_soon(functools.partial(_export, source, path, target, directory=True))
        for path in files:
            if not any(_within(path, d) for d in directories):
                group.start_soon(functools.partial(_export, source, path, target, directory=False))
    return target


def outermost(paths: Sequence[str]) -> list[str]:
    """The paths none of the others contains, sorted: exporting those exports them all, once."""
    normal = sorted({PurePosixPath(p).as_posix() for p in paths})
    return [p for p in normal if not any(o != p and _within(p, o) for o in normal)]


def _within(path: str, directory: str) -> bool:
    return directory in (".", path) or path.startswith(directory.rstrip("/") + "/")


async def _export(source: dagger.Directory, path: str, target: Path, *, directory: bool) -> None:
    """Export ``path`` of ``source`` to the same path under ``target``, if the source has it."""
    kind = dagger.ExistsType.DIRECTORY_TYPE if directory else dagger.ExistsType.REGULAR_TYPE
    if not await source.exists(path, expected_type=kind):
        return  # not in the source: see the module docstring
    destination = target / path
    destination.parent.mkdir(parents=True, exist_ok=True)
    item = source.directory(path) if directory else source.file(path)
    await item.export(str(destination))
