"""An engine double for testing Dagger recipes without an engine.

Dagger chains are lazy: the SDK records each call as a selection and sends the
whole query only when a value is awaited, through ``Context.execute``. The
``engine`` fixture replaces that one method: it records the query the SDK would
have sent and answers by the last field asked for, as the engine would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import dagger
import gql
import pytest
from dagger._exceptions import QueryErrorValue
from dagger.client._core import Context
from dagger.client.base import Type

Query = list[tuple[str, dict[str, Any]]]
DIGEST = "sha256:" + "d" * 64


def query(obj: Type) -> Query:
    """The selections behind a lazy Dagger object, with object arguments expanded the same way."""
    return _selections(obj._ctx)


def _selections(ctx: Context) -> Query:
    return [(f.name, {k: _expand(v) for k, v in f.args.items()}) for f in ctx.selections]


def _expand(value: Any) -> Any:
    if isinstance(value, Type):
        return query(value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def query_error(message: str) -> dagger.QueryError:
    """A QueryError as the SDK raises it for an engine-side failure."""
    return dagger.QueryError([QueryErrorValue(message=message)], gql.GraphQLRequest("{ container { id } }"))


class EngineDouble:
    """Answers the SDK's requests by the last field asked for; records every query."""

    def __init__(self) -> None:
        self.requests: list[Query] = []
        self.answers: dict[str, Callable[[Query], Any]] = {
            "sync": lambda q: "an-id",
            "defaultPlatform": lambda q: "linux/amd64",
            "publish": lambda q: f"{q[-1][1]['address']}@{DIGEST}",
            "exitCode": lambda q: 0,
            "stdout": lambda q: "",
            "stderr": lambda q: "",
        }

    async def execute(self, ctx: Context, return_type: Any = None) -> Any:
        asked = _selections(ctx)
        self.requests.append(asked)
        answer = self.answers[asked[-1][0]](asked)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, Exception):
            raise answer
        # As the SDK does with the engine's JSON: typed by what the caller asked for.
        return ctx.converter.structure(answer, return_type) if return_type is not None else None

    def asked_for(self, field: str) -> list[Query]:
        """Every recorded query whose last field is ``field``."""
        return [q for q in self.requests if q[-1][0] == field]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> EngineDouble:
    """An EngineDouble standing in for the engine for this test."""
    double = EngineDouble()

    async def execute(ctx: Context, return_type: Any = None) -> Any:
        return await double.execute(ctx, return_type)

    monkeypatch.setattr(Context, "execute", execute)
    return double
