"""SecretValue never shows its value; from_env says what to set; redact scrubs other programs' output."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import traceback
from collections.abc import Callable

import pytest

from pipeline.errors import MissingSecretError
from pipeline.secret import SecretValue, from_env, redact

PLAINTEXT = "s3cr3t-Value-0123456789"


@pytest.fixture
def secret() -> SecretValue:
    return SecretValue("DOKPLOY_API_KEY", PLAINTEXT)


RENDERINGS = [
    pytest.param(str, id="str"),
    pytest.param(repr, id="repr"),
    pytest.param(lambda s: f"{s}", id="f-string"),
    pytest.param(lambda s: f"{s!r}", id="f-string-repr"),
    pytest.param(lambda s: f"{s:>40}", id="f-string-spec"),
    pytest.param(lambda s: format(s, ""), id="format"),
    pytest.param(lambda s: "%s %r" % (s, s), id="percent"),  # noqa: UP031 - the old style is what we check.
    pytest.param("{0} {0!r}".format, id="str-format"),
    pytest.param(lambda s: str([s, {"key": s}]), id="in-containers"),
    pytest.param(lambda s: str(ValueError(s)), id="exception-arg"),
    pytest.param(lambda s: str(RuntimeError(f"login failed with {s}")), id="exception-message"),
    pytest.param(lambda s: json.dumps({"k": str(s)}), id="json-of-str"),
]


@pytest.mark.parametrize("render", RENDERINGS)
def test_no_rendering_shows_the_value(secret: SecretValue, render: Callable[[SecretValue], str]) -> None:
    """Every ordinary way of turning the secret into text gives '***', never the value."""
    text = render(secret)
    assert PLAINTEXT not in text
    assert "***" in text


def test_repr_names_where_it_came_from(secret: SecretValue) -> None:
    """repr keeps the name (safe) and hides the value."""
    assert repr(secret) == "SecretValue('DOKPLOY_API_KEY', '***')"
    assert secret.name == "DOKPLOY_API_KEY"
    assert secret.reveal() == PLAINTEXT


def test_a_traceback_does_not_show_the_value(secret: SecretValue) -> None:
    """An exception raised with the secret in it formats without the value."""
    try:
        raise RuntimeError(secret)
    except RuntimeError as error:
        text = "".join(traceback.format_exception(error))
    assert "RuntimeError: ***" in text
    assert PLAINTEXT not in text


def test_logging_does_not_show_the_value(secret: SecretValue, caplog: pytest.LogCaptureFixture) -> None:
    """A log line with the secret as an argument shows '***'."""
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("token %s (%r)", secret, secret)
    assert caplog.messages == ["token *** (SecretValue('DOKPLOY_API_KEY', '***'))"]


@pytest.mark.parametrize(
    "leak",
    [
        pytest.param(pickle.dumps, id="pickle"),
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
        pytest.param(json.dumps, id="json"),
    ],
)
def test_it_cannot_be_serialised_or_copied(secret: SecretValue, leak: Callable[[object], object]) -> None:
    """Pickling, copying or JSON-encoding a SecretValue fails, and the error does not carry the value."""
    with pytest.raises(TypeError) as caught:
        leak(secret)
    assert PLAINTEXT not in str(caught.value)


def test_it_has_no_instance_dict(secret: SecretValue) -> None:
    """With __slots__ there is no __dict__ for vars() or a debugger's repr to dump."""
    with pytest.raises(TypeError):
        vars(secret)


def test_equality_compares_values(secret: SecretValue) -> None:
    """Two SecretValues are equal when their values are, whatever their names."""
    assert secret == SecretValue("OTHER", PLAINTEXT)
    assert secret != SecretValue("DOKPLOY_API_KEY", "different")
    assert secret != PLAINTEXT
    assert len({secret, SecretValue("OTHER", PLAINTEXT)}) == 1


def test_from_env_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A set variable becomes a SecretValue named after it."""
    monkeypatch.setenv("PIPELINE_TEST_TOKEN", PLAINTEXT)
    value = from_env("PIPELINE_TEST_TOKEN", needed_for="publishing", flag="--registry-token-env")
    assert (value.name, value.reveal()) == ("PIPELINE_TEST_TOKEN", PLAINTEXT)


@pytest.mark.parametrize("value", [pytest.param(None, id="unset"), pytest.param("", id="empty")])
def test_from_env_missing_names_the_variable_and_the_flag(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """An unset or empty variable is a MissingSecretError (exit 2) naming the variable and the flag."""
    if value is None:
        monkeypatch.delenv("PIPELINE_TEST_TOKEN", raising=False)
    else:
        monkeypatch.setenv("PIPELINE_TEST_TOKEN", value)
    monkeypatch.setenv("PIPELINE_OTHER_TOKEN", PLAINTEXT)
    with pytest.raises(MissingSecretError) as caught:
        from_env("PIPELINE_TEST_TOKEN", needed_for="deploying to Dokploy", flag="--dokploy-key-env")
    assert str(caught.value) == (
        "deploying to Dokploy needs a secret: set the environment variable PIPELINE_TEST_TOKEN "
        "or pass --dokploy-key-env naming another variable"
    )
    assert caught.value.exit_code == 2
    assert PLAINTEXT not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param(f"login {PLAINTEXT} ok", [SecretValue("A", PLAINTEXT)], "login *** ok", id="one"),
        pytest.param(f"{PLAINTEXT}{PLAINTEXT}", [SecretValue("A", PLAINTEXT)], "******", id="repeated"),
        pytest.param("a=one b=two", [SecretValue("A", "one"), SecretValue("B", "two")], "a=*** b=***", id="several"),
        pytest.param("nothing here", [SecretValue("A", PLAINTEXT)], "nothing here", id="absent"),
        pytest.param("keep all", [None, SecretValue("E", "")], "keep all", id="none-and-empty-are-skipped"),
    ],
)
def test_redact(text: str, secrets: list[SecretValue | None], expected: str) -> None:
    """redact replaces each secret's value wherever it appears, and ignores missing or empty secrets."""
    assert redact(text, *secrets) == expected
