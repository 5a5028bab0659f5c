"""A service's content key: a hash of exactly what its build sees.

The key covers the files of the build context that ``.dockerignore`` lets
through, the Dockerfile, the target, the build args, the platforms, the
names of the build secrets, and the service's test and smoke settings. A
file the build ignores never changes the key, so
an image tagged ``src-<key>`` in the registry is the image this source would
build, and the service can be reused instead of rebuilt (Skaffold's inputDigest,
tied to the registry). It is computed from the file system alone, so ``plan``
shows the same key with or without a Dagger engine.

``.dockerignore`` follows Docker's rules: one pattern per line, ``#`` comments,
``*``, ``?``, ``[...]`` and ``**``, ``!`` re-includes, the last matching
pattern wins, and a pattern that matches a directory matches all below it.
Like Dagger, ``<Dockerfile>.dockerignore`` is preferred to the context's one.

``SOURCE_IGNORE`` is what is never uploaded to the engine, in either mode; the
key leaves it out too, so a local ``node_modules`` or ``dist`` changes nothing
and library mode computes the same key as module mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.config import Service

_CHUNK = 1 << 20

# Only what builds need is uploaded: VCS data, dependencies and build outputs stay home.
# Patterns are relative to the source root, with .dockerignore's rules (as Dagger's).
SOURCE_IGNORE = [
    ".git",
    "**/node_modules",
    "**/.venv",
    "**/venv",
    "**/__pycache__",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.next",
    "**/dist",
    "**/coverage",
    "sdk",
]


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    exclude: bool


class DockerIgnore:
    """The patterns of one .dockerignore file."""

    def __init__(self, text: str) -> None:
        self.patterns: list[_Pattern] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            line = line.lstrip("!").strip()
            cleaned = os.path.normpath(line.lstrip("/")).replace(os.sep, "/")
            if cleaned in (".", ""):
                continue
            self.patterns.append(_Pattern(re.compile(_translate(cleaned)), exclude))

    def ignores(self, path: str) -> bool:
        """Whether ``path`` (relative, '/'-separated) is left out of the build context."""
        parents = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
        candidates = [*parents, path]
        ignored = False
        for pattern in self.patterns:
            if any(pattern.regex.fullmatch(c) for c in candidates):
                ignored = pattern.exclude
        return ignored


def _translate(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression over '/'-separated paths."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith(("^", "!")):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildInputs:
    """The files and settings one service's build sees."""

    service: Service
    root: Path

    @property
    def context(self) -> Path:
        return self.root / self.service.context

    def ignore_rules(self) -> DockerIgnore:
        """The .dockerignore that applies, as Dagger picks it."""
        specific = self.context / (self.service.dockerfile + ".dockerignore")
        general = self.context / ".dockerignore"
        for candidate in (specific, general):
            if candidate.is_file():
                return DockerIgnore(candidate.read_text(encoding="utf-8", errors="replace"))
        return DockerIgnore("")

    def files(self) -> list[str]:
        """Every file of the context the build sees, sorted, relative to the context."""
        rules = self.ignore_rules()
        reincludes = any(not p.exclude for p in rules.patterns)
        context = PurePosixPath(self.service.context).as_posix()
        from_root = "" if context == "." else context + "/"
        seen = []
        for directory, dirnames, filenames in os.walk(self.context):
            rel_dir = Path(directory).relative_to(self.context).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            # Never uploaded, so never seen by the build, whatever .dockerignore says.
            dirnames[:] = [d for d in dirnames if not _never_uploaded(from_root + prefix, d)]
            uploaded = [f for f in filenames if not _never_uploaded(from_root + prefix, f)]
            # Prune directories that are ignored and cannot be re-included, to keep big trees cheap.
            if not reincludes:
                dirnames[:] = sorted(d for d in dirnames if not rules.ignores(prefix + d))
            # A symlink to a directory is sent as the link itself; os.walk does not descend into it.
            links = [d for d in dirnames if os.path.islink(os.path.join(directory, d))]
            dirnames[:] = [d for d in dirnames if d not in links]
            for name in [*uploaded, *links]:
                rel = prefix + name
                if not rules.ignores(rel):
                    seen.append(rel)
        dockerfile = PurePosixPath(self.service.dockerfile).as_posix()
        if dockerfile not in seen and (self.context / dockerfile).is_file():
            seen.append(dockerfile)  # Docker always sends the Dockerfile, even when ignored.
        return sorted(seen)


_NOT_UPLOADED = DockerIgnore("\n".join(SOURCE_IGNORE))
# Every SOURCE_IGNORE pattern ends in a plain name: a path whose last part is none of
# them cannot match, which spares the regular expressions on almost every file.
_NOT_UPLOADED_NAMES = frozenset(pattern.rsplit("/", 1)[-1] for pattern in SOURCE_IGNORE)


def _never_uploaded(prefix: str, name: str) -> bool:
    return name in _NOT_UPLOADED_NAMES and _NOT_UPLOADED.ignores(prefix + name)


def content_key(service: Service, root: Path) -> str:
    """The sha256 hex of everything the service's build depends on."""
    inputs = BuildInputs(service=service, root=root)
    digest = hashlib.sha256()
    settings = {
        "dockerfile": service.dockerfile,
        "target": service.target,
        "build_args": dict(sorted(service.build_args.items())),
        "platforms": list(service.platforms),
        "secrets": sorted(service.secrets),
        # Checks are inputs too: a service whose tests or smoke check change is rebuilt and
        # checked again, instead of being reused without ever running the new check.
        "test": repr(service.test),
        "smoke": repr(service.smoke),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for rel in inputs.files():
        path = inputs.context / rel
        digest.update(b"\0file\0" + rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link\0" + os.readlink(path).encode())
            continue
        # The mode bits, not os.access: the answer must not depend on who computes the key.
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(_file_hash(path))
    return digest.hexdigest()


def _file_hash(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()
