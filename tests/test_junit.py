"""Tests for pipeline.junit: failed tests read from the JUnit XML that real runners write."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.junit import failures, summarize

PYTEST_STYLE = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
  <testcase classname="tests.test_api" name="test_health" time="0.01"/>
  <testcase classname="tests.test_api" name="test_login" time="0.02">
    <failure message="AssertionError: 401 != 200&#10;second line">Traceback ...</failure>
  </testcase>
  <testcase classname="tests.test_db" name="test_migrate" time="0.00">
    <error message="">psycopg.OperationalError: connection refused
more</error>
  </testcase>
  <testcase classname="tests.test_api" name="test_later" time="0.0"><skipped message="todo"/></testcase>
</testsuite></testsuites>
"""


def test_failed_and_errored_cases_are_listed_with_their_first_message_line():
    """Passing and skipped cases are left out; the message (or the text) gives the reason."""
    found = failures("reports/junit.xml", PYTEST_STYLE)

    assert [f.line() for f in found] == [
        "tests.test_api::test_login failed: AssertionError: 401 != 200",
        "tests.test_db::test_migrate errored: psycopg.OperationalError: connection refused",
    ]


def test_a_bare_testsuite_root_is_read_too():
    """Runners that write one <testsuite> as the root (jest-junit, Surefire) are understood."""
    text = '<testsuite name="jest"><testcase name="renders"><failure>expected 1</failure></testcase></testsuite>'

    assert [f.line() for f in failures("junit.xml", text)] == ["renders failed: expected 1"]


def test_an_unreadable_report_is_reported_not_raised():
    """A truncated file becomes one line saying it is not valid XML."""
    (only,) = failures("reports/broken.xml", "<testsuite><testcase")

    assert only.kind == "unreadable"
    assert only.name == "reports/broken.xml"
    assert "not valid XML" in only.message


def test_summaries_are_capped_and_say_how_many_more_failed():
    """A run with hundreds of failures still gives a summary a person can read."""
    cases = "".join(f'<testcase name="t{i}"><failure message="boom"/></testcase>' for i in range(25))
    lines = summarize("api", {"a.xml": f"<testsuite>{cases}</testsuite>"}, limit=3)

    assert lines == [
        "api: t0 failed: boom",
        "api: t1 failed: boom",
        "api: t2 failed: boom",
        "api: ... and 22 more failed tests (see the reports)",
    ]


def test_a_real_pytest_report_is_parsed(tmp_path: Path):
    """pytest's own --junitxml output, from a real run with one failing test, gives that test."""
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(
            """
            def test_ok():
                assert True

            def test_broken():
                assert 1 + 1 == 3, "arithmetic is off"
            """
        )
    )
    report = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=120,
    )

    (only,) = failures("junit.xml", report.read_text())
    assert only.name.endswith("::test_broken")
    assert only.kind == "failed"
    assert "arithmetic is off" in only.message
