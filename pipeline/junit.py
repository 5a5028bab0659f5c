"""Failed tests from JUnit XML reports, for the run summary.

Test runners (pytest, jest-junit, go-junit-report, Surefire) write JUnit XML;
a service declares where with ``test.reports``. The summary lists each failed
or errored test case by name with the first line of its message, so a person
sees what broke without opening the log.
"""

from __future__ import annotations

# The reports come from the service's own test run, inside the engine: not untrusted input.
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

_MESSAGE_LIMIT = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class TestFailure:
    """One failed or errored test case."""

    __test__ = False  # not a pytest test class, despite the name

    report: str
    name: str
    kind: str
    message: str

    def line(self) -> str:
        """``tests/test_api.py::test_login failed: AssertionError: 401 != 200``."""
        return f"{self.name} {self.kind}: {self.message}" if self.message else f"{self.name} {self.kind}"


def failures(report: str, text: str) -> list[TestFailure]:
    """The failing cases of one report; a report that is not JUnit XML is one failure saying so."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - see the import.
    except ET.ParseError as e:
        return [TestFailure(report=report, name=report, kind="unreadable", message=f"not valid XML ({e})")]
    found = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            outcome = case.find(kind)
            if outcome is None:
                continue
            found.append(
                TestFailure(
                    report=report,
                    name=_case_name(case),
                    kind="failed" if kind == "failure" else "errored",
                    message=_first_line(outcome.get("message") or outcome.text or ""),
                )
            )
    return found


def summarize(service: str, reports: Mapping[str, str], *, limit: int = 10) -> list[str]:
    """One line per failed test of a service, at most ``limit`` and a count of the rest."""
    found = [f for path, text in sorted(reports.items()) for f in failures(path, text)]
    lines = [f"{service}: {f.line()}" for f in found[:limit]]
    if len(found) > limit:
        lines.append(f"{service}: ... and {len(found) - limit} more failed tests (see the reports)")
    return lines


def _case_name(case: ET.Element) -> str:
    name = case.get("name", "?")
    owner = case.get("classname") or case.get("file") or ""
    return f"{owner}::{name}" if owner else name


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."
