"""Dokploy env strings (``.env`` syntax): read them, and change one value keeping every other byte.

Dokploy stores a compose's environment as one string that its API replaces
whole, so a deploy must rewrite only its image variables and leave comments,
blank lines, order, ``export``, quotes and CRLF exactly as they were. Every
reader (deploy, prune, status, doctor) goes through this one parser, so they
agree on what a line means: quoted values, inline ``# comments``, the last
assignment winning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ASSIGNMENT = re.compile(r"^(?P<head>[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*)(?P<rest>.*)$")
_QUOTED = re.compile(r"""^(?P<q>["'])(?P<value>.*?)(?P=q)(?P<suffix>.*)$""")
_COMMENT = re.compile(r"[ \t]+#")


def values(env: str) -> dict[str, str]:
    """The variables an env string assigns (the last assignment wins, as in ``.env``)."""
    found = {}
    for line in env.split("\n"):
        parsed = _parse_line(line.removesuffix("\r"))
        if parsed is not None:
            found[parsed[1]] = parsed[3]
    return found


def replace(env: str, updates: Mapping[str, str]) -> str:
    """``env`` with each named variable set to its new value; every other byte kept as it was."""
    present = values(env)
    missing = [name for name in updates if name not in present]
    if missing:
        raise KeyError(", ".join(missing))
    lines = []
    for line in env.split("\n"):
        body = line.removesuffix("\r")
        parsed = _parse_line(body)
        if parsed is not None and parsed[1] in updates:
            head, name, quote, _, suffix = parsed
            body = f"{head}{quote}{updates[name]}{quote}{suffix}"
        lines.append(body + line[len(line.removesuffix("\r")) :])
    return "\n".join(lines)


def _parse_line(line: str) -> tuple[str, str, str, str, str] | None:
    """``(head, name, quote, value, suffix)`` of an assignment line, or None for comments and blanks."""
    match = _ASSIGNMENT.match(line)
    if match is None:
        return None
    rest = match["rest"]
    quoted = _QUOTED.match(rest)
    if quoted is not None:
        return match["head"], match["key"], quoted["q"], quoted["value"], quoted["suffix"]
    comment = _COMMENT.search(rest)
    value = (rest[: comment.start()] if comment else rest).rstrip(" \t")
    return match["head"], match["key"], "", value, rest[len(value) :]
