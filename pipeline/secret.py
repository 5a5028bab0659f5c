"""A secret's plaintext, held so that it can never be printed by accident.

Secrets arrive as ``dagger.Secret`` (module mode) or environment variables
(library mode) and are turned into a ``SecretValue`` only at the HTTP boundary.
``str``, ``repr`` and f-strings all show ``'***'``; only ``reveal()`` gives the
value, and only the code that builds a request header calls it.
"""

from __future__ import annotations

import os
from typing import Final, NoReturn

from pipeline.errors import MissingSecretError

_REDACTED: Final = "***"


class SecretValue:
    """A secret string whose ``str`` and ``repr`` never show the value."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        """Where the secret came from (an argument or variable name), safe to print."""
        return self._name

    def reveal(self) -> str:
        """The plaintext. Call it only to build a request; never log the result."""
        return self._value

    def __str__(self) -> str:
        return _REDACTED

    def __repr__(self) -> str:
        return f"SecretValue({self._name!r}, {_REDACTED!r})"

    def __format__(self, spec: str) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled")


def from_env(variable: str, *, needed_for: str, flag: str) -> SecretValue:
    """Read a secret from the environment, or say which variable and flag to set."""
    value = os.environ.get(variable, "")
    if not value:
        raise MissingSecretError(
            f"{needed_for} needs a secret: set the environment variable {variable} "
            f"or pass {flag} naming another variable"
        )
    return SecretValue(variable, value)


def redact(text: str, *secrets: SecretValue | None) -> str:
    """Replace every secret's value in ``text`` (for output from other programs)."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), _REDACTED)
    return text
