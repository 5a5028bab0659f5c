"""Tests for pipeline.envfile: Dokploy env strings read and rewritten as .env files are."""

from __future__ import annotations

import pytest

from pipeline import envfile
from tests.support.dokploy_double import BACKEND_ENV, IMAGE_PREFIX, OLD_TAG

OLD_BRAIN = f"{IMAGE_PREFIX}brain-gateway:{OLD_TAG}"


def test_replace_keeps_every_other_byte():
    """Only the value changes: comments, blanks, order, export, quotes, inline comments and CRLF stay."""
    env = "# top\r\nexport A=\"old\"\r\n\r\nB=keep  # note\r\nC='x'\r\nA2=old # c\n"
    new = envfile.replace(env, {"A": "new", "C": "y", "A2": "z"})
    assert new == "# top\r\nexport A=\"new\"\r\n\r\nB=keep  # note\r\nC='y'\r\nA2=z # c\n"
    assert envfile.replace(BACKEND_ENV, {"BRAIN_GATEWAY_IMAGE": "img@sha256:" + "f" * 64}) == BACKEND_ENV.replace(
        f'"{OLD_BRAIN}"', '"img@sha256:' + "f" * 64 + '"'
    )


def test_values_read_like_dotenv():
    """Quotes and export are stripped, inline comments dropped, the last assignment wins."""
    assert envfile.values("export A=\"1\"\n# B=2\nC=3 # three\nC=4\nD='5'\n") == {"A": "1", "C": "4", "D": "5"}


def test_replace_refuses_missing_variables():
    """A variable that is not assigned in the env is refused, not appended."""
    with pytest.raises(KeyError, match="MISSING"):
        envfile.replace("A=1\n# MISSING=2\n", {"MISSING": "x"})


def test_an_inline_comment_after_a_pin_is_not_part_of_the_value():
    """The reference a deploy pinned is read back exactly, whatever comment a person added after it."""
    pin = "ghcr.io/acme/api@sha256:" + "c" * 64
    env = f"API_IMAGE={pin}  # pinned by the last deploy\r\nQUOTED='{pin}' # too\r\n"
    assert envfile.values(env) == {"API_IMAGE": pin, "QUOTED": pin}
