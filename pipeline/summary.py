"""The one summary of a run, the same on a laptop and in Actions.

``deploy``, ``promote`` and ``prune`` each end by building a ``RunSummary``: per
service, what changed, which tags and digest were published, the Dokploy
deployment and its status, the health check, how long it took and whether it was
rolled back. It renders three ways from the same data so they never disagree:

* ``render_text``: an aligned table for terminals and Actions logs;
* ``render_markdown``: a GitHub table for ``$GITHUB_STEP_SUMMARY`` (and the
  module's output, which dagger-for-github puts on the run page);
* ``to_json``: stable keys and ISO times, for scripts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from pipeline.errors import PipelineError, UsageError
from pipeline.progress import format_duration

Change = Literal["built", "reused", "promoted", "skipped", "failed", "-"]
TestStatus = Literal["passed", "failed", "skipped", "none"]
Health = Literal["passed", "failed", "not checked"]
RolledBack = Literal["no", "yes, healthy", "yes, failed", "-"]

JSON_SCHEMA_VERSION = 1
# sha256: plus 12 hex digits tells images apart; the full digest is in the JSON.
_SHORT_DIGEST = len("sha256:") + 12


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOutcome:
    """What a run did to one service."""

    service: str
    group: str
    change: Change
    tags: tuple[str, ...]
    digest: str
    reference: str
    tests: TestStatus
    deployment: str
    deploy_status: str
    health: Health
    duration_s: float
    rolled_back: RolledBack
    error: str = ""
    retention: str = ""

    def __post_init__(self) -> None:
        # The Literal types guard typed callers; this guards values built from strings.
        for field, allowed in (
            ("change", Change),
            ("tests", TestStatus),
            ("health", Health),
            ("rolled_back", RolledBack),
        ):
            value = getattr(self, field)
            if value not in get_args(allowed):
                raise ValueError(f"ServiceOutcome.{field} must be one of {get_args(allowed)}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """The result of one deploy, promote or prune run."""

    command: str
    environment: str
    branch: str
    sha: str
    ok: bool
    started_at: datetime
    duration_s: float
    outcomes: tuple[ServiceOutcome, ...]
    notes: tuple[str, ...]
    run_url: str = ""
    failures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError("RunSummary.started_at must be timezone-aware (use datetime.now(UTC))")

    @property
    def headline(self) -> str:
        """``deploy staging abc1234: OK`` (or ``FAILED``)."""
        words = [self.command, self.environment, self.sha[:7]]
        return " ".join(w for w in words if w) + (": OK" if self.ok else ": FAILED")

    @property
    def errors(self) -> tuple[str, ...]:
        """The error messages in order: ``failures`` if given, else each failed service's error."""
        if self.failures:
            return self.failures
        return tuple(f"{o.service}: {o.error}" for o in self.outcomes if o.error)


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    value: Callable[[ServiceOutcome], str]


def _short_digest(digest: str) -> str:
    return digest[:_SHORT_DIGEST]


_SERVICE = _Column("service", lambda o: o.service)
_GROUP = _Column("group", lambda o: o.group)
_CHANGE = _Column("change", lambda o: o.change)
_TAGS = _Column("tags", lambda o: ", ".join(o.tags))
_DIGEST = _Column("digest", lambda o: _short_digest(o.digest))
_TESTS = _Column("tests", lambda o: o.tests)
_DEPLOYMENT = _Column("deployment", lambda o: o.deployment)
_STATUS = _Column("status", lambda o: o.deploy_status)
_HEALTH = _Column("health", lambda o: o.health)
_ROLLED_BACK = _Column("rolled back", lambda o: o.rolled_back)
_RETENTION = _Column("retention", lambda o: o.retention)
_TIME = _Column("time", lambda o: format_duration(o.duration_s))

# Each command shows the columns that mean something for it; unknown commands get deploy's.
_DEPLOY_COLUMNS = (
    _SERVICE,
    _GROUP,
    _CHANGE,
    _TAGS,
    _DIGEST,
    _TESTS,
    _DEPLOYMENT,
    _STATUS,
    _HEALTH,
    _ROLLED_BACK,
    _TIME,
)
_COLUMNS = {
    "deploy": _DEPLOY_COLUMNS,
    "promote": (
        _SERVICE,
        _GROUP,
        _CHANGE,
        _TAGS,
        _DIGEST,
        _DEPLOYMENT,
        _STATUS,
        _HEALTH,
        _ROLLED_BACK,
        _TIME,
    ),
    "prune": (_SERVICE, _RETENTION, _TIME),
}


def _columns(summary: RunSummary) -> tuple[_Column, ...]:
    return _COLUMNS.get(summary.command, _DEPLOY_COLUMNS)


def _context(summary: RunSummary) -> str:
    """One line: branch, commit, start time, duration."""
    parts = []
    if summary.branch:
        parts.append(f"branch {summary.branch}")
    if summary.sha:
        parts.append(f"commit {summary.sha[:7]}")
    parts.append(f"started {summary.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    parts.append(f"took {format_duration(summary.duration_s)}")
    return ", ".join(parts)


def render_text(summary: RunSummary) -> str:
    """An aligned plain-text summary: headline, table, notes, errors, run URL."""
    lines = [summary.headline, _context(summary)]
    if summary.outcomes:
        columns = _columns(summary)
        rows = [[c.title for c in columns]]
        rows += [[c.value(o) or "-" for c in columns] for o in summary.outcomes]
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        lines.append("")
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if summary.notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in summary.notes]
    if summary.errors:
        lines += ["", "errors:"]
        for error in summary.errors:
            first, *rest = error.splitlines() or [""]
            lines.append(f"  - {first}")
            lines += [f"    {line}" for line in rest]
    if summary.run_url:
        lines += ["", f"run: {summary.run_url}"]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    # A table row is one line and | ends a cell, even inside backticks.
    return " ".join(text.split()).replace("|", "\\|") or "-"


def _md_code(text: str) -> str:
    # A code span must be delimited by more backticks than it contains.
    if not text:
        return ""
    fence = "`" * (_longest_backtick_run(text) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


# Identifiers read better as code; words (statuses) stay plain.
_CODE_COLUMNS = frozenset({"digest", "deployment"})


def _md_value(column: _Column, outcome: ServiceOutcome) -> str:
    if column is _TAGS:
        return ", ".join(_md_code(tag) for tag in outcome.tags)
    value = column.value(outcome)
    return _md_code(value) if column.title in _CODE_COLUMNS else value


def render_markdown(summary: RunSummary) -> str:
    """A GitHub-flavoured Markdown summary: heading, context, table, notes, errors."""
    context = _context(summary) + "."
    if summary.run_url:
        context += f" [Run log]({summary.run_url})"
    lines = [f"### {summary.headline}", "", context[0].upper() + context[1:]]
    if summary.outcomes:
        columns = _columns(summary)
        lines += [
            "",
            "| " + " | ".join(c.title[0].upper() + c.title[1:] for c in columns) + " |",
            "|" + "|".join(" --- " for _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(_md_value(c, o)) for c in columns) + " |" for o in summary.outcomes]
    if summary.notes:
        lines += ["", "**Notes**", ""] + [f"- {' '.join(note.split())}" for note in summary.notes]
    if summary.errors:
        # Errors can span lines (log tails) and hold any character: a fenced block shows them as they are.
        body = "\n\n".join(summary.errors)
        fence = "`" * max(3, _longest_backtick_run(body) + 1)
        lines += ["", "**Errors**", "", f"{fence}text", body, fence]
    return "\n".join(lines) + "\n"


def _outcome_json(outcome: ServiceOutcome) -> dict[str, object]:
    return {
        "service": outcome.service,
        "group": outcome.group,
        "change": outcome.change,
        "tags": list(outcome.tags),
        "digest": outcome.digest,
        "reference": outcome.reference,
        "tests": outcome.tests,
        "deployment": outcome.deployment,
        "deploy_status": outcome.deploy_status,
        "health": outcome.health,
        "duration_s": round(float(outcome.duration_s), 3),
        "rolled_back": outcome.rolled_back,
        "error": outcome.error,
        "retention": outcome.retention,
    }


def to_json(summary: RunSummary) -> str:
    """The summary as JSON: every field, in a fixed order, times in ISO 8601 UTC."""
    data = {
        "schema_version": JSON_SCHEMA_VERSION,
        "command": summary.command,
        "environment": summary.environment,
        "branch": summary.branch,
        "sha": summary.sha,
        "ok": summary.ok,
        "headline": summary.headline,
        "started_at": summary.started_at.astimezone(UTC).isoformat(timespec="seconds"),
        "duration_s": round(float(summary.duration_s), 3),
        "run_url": summary.run_url,
        "outcomes": [_outcome_json(o) for o in summary.outcomes],
        "notes": list(summary.notes),
        "failures": list(summary.errors),
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_step_summary(markdown: str, env: Mapping[str, str] = os.environ) -> bool:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` if set; return whether it wrote."""
    path = env.get("GITHUB_STEP_SUMMARY", "")
    if not path:
        return False
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as error:
        raise PipelineError(_step_summary_problem(path, error)) from error
    return True


def check_step_summary(env: Mapping[str, str] = os.environ) -> None:
    """Before a run: ``$GITHUB_STEP_SUMMARY``, if set, can be appended to (a run must not fail after deploying)."""
    path = env.get("GITHUB_STEP_SUMMARY", "")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise UsageError(_step_summary_problem(path, error)) from error


def _step_summary_problem(path: str, error: OSError) -> str:
    return (
        f"cannot append the run summary to {path} (from GITHUB_STEP_SUMMARY): {error.strerror}; "
        "unset GITHUB_STEP_SUMMARY outside Actions or point it at a writable file"
    )


def write_json(summary: RunSummary, path: Path | str) -> None:
    """Write the JSON summary to ``path``, replacing it."""
    target = Path(path)
    problem = _json_target_problem(target)
    if problem:
        raise PipelineError(problem)
    try:
        target.write_text(to_json(summary), encoding="utf-8")
    except OSError as error:
        raise PipelineError(f"cannot write the JSON summary to {target}: {error.strerror}") from error


def check_json_target(path: Path | str) -> None:
    """Before a run: the JSON summary can be written to ``path`` (a run must not fail after deploying)."""
    problem = _json_target_problem(Path(path))
    if problem:
        raise UsageError(problem)


def _json_target_problem(target: Path) -> str:
    if not target.parent.is_dir():
        return (
            f"cannot write the JSON summary to {target}: the directory {target.parent} does not exist; "
            "create it first or choose a path in an existing directory"
        )
    if target.is_dir():
        return (
            f"cannot write the JSON summary to {target}: it is a directory; name a file, like {target / 'summary.json'}"
        )
    return ""


def run_url_from_env(env: Mapping[str, str] = os.environ) -> str:
    """The Actions run's URL from the runner's variables, or "" outside Actions."""
    server = env.get("GITHUB_SERVER_URL", "").rstrip("/")
    repository = env.get("GITHUB_REPOSITORY", "")
    run_id = env.get("GITHUB_RUN_ID", "")
    if not (server and repository and run_id):
        return ""
    return f"{server}/{repository}/actions/runs/{run_id}"
