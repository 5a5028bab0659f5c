"""The benchmarks stay runnable: each imports against the current package (``make bench`` runs them)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["bench_deploy", "bench_promote", "bench_plan"])
def test_each_benchmark_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
