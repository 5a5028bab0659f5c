"""The run summary: golden renders for a success, a rollback and a prune, and the file helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.errors import PipelineError, UsageError
from pipeline.summary import (
    RunSummary,
    ServiceOutcome,
    check_json_target,
    check_step_summary,
    render_markdown,
    render_text,
    run_url_from_env,
    to_json,
    write_json,
    write_step_summary,
)

DIGEST_A = "sha256:" + "a1" * 32
DIGEST_B = "sha256:" + "b2" * 32
STARTED = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
RUN_URL = "https://github.com/bizoholic-digital/bizosaas/actions/runs/42"


def success() -> RunSummary:
    return RunSummary(
        command="deploy",
        environment="staging",
        branch="staging",
        sha="abc1234f00d",
        ok=True,
        started_at=STARTED,
        duration_s=184.5,
        outcomes=(
            ServiceOutcome(
                service="brain-gateway",
                group="backend",
                change="built",
                tags=("staging", "staging-abc1234"),
                digest=DIGEST_A,
                reference=f"ghcr.io/bizoholic-digital/bizosaas-brain-gateway@{DIGEST_A}",
                tests="passed",
                deployment="dpl_backend_01",
                deploy_status="done",
                health="passed",
                duration_s=96.25,
                rolled_back="no",
            ),
            ServiceOutcome(
                service="bizoholic-frontend",
                group="frontend",
                change="reused",
                tags=("staging", "staging-abc1234"),
                digest=DIGEST_B,
                reference=f"ghcr.io/bizoholic-digital/bizosaas-bizoholic-frontend@{DIGEST_B}",
                tests="skipped",
                deployment="dpl_frontend_01",
                deploy_status="done",
                health="passed",
                duration_s=41.0,
                rolled_back="no",
            ),
        ),
        notes=("bizoholic-frontend unchanged since its last build: image reused",),
        run_url=RUN_URL,
    )


def rolled_back() -> RunSummary:
    return RunSummary(
        command="deploy",
        environment="production",
        branch="main",
        sha="0f1e2d3c4b5a",
        ok=False,
        started_at=STARTED,
        duration_s=305.0,
        outcomes=(
            ServiceOutcome(
                service="brain-gateway",
                group="backend",
                change="built",
                tags=("latest", "main-0f1e2d3"),
                digest=DIGEST_A,
                reference=f"ghcr.io/bizoholic-digital/bizosaas-brain-gateway@{DIGEST_A}",
                tests="passed",
                deployment="dpl_backend_02",
                deploy_status="done",
                health="failed",
                duration_s=250.0,
                rolled_back="yes, healthy",
                error="health check https://api.example.test/health did not pass after 120.0s (last result: HTTP 503)",
            ),
            ServiceOutcome(
                service="client-portal",
                group="frontend",
                change="skipped",
                tags=(),
                digest="",
                reference="",
                tests="none",
                deployment="",
                deploy_status="not deployed",
                health="not checked",
                duration_s=0.0,
                rolled_back="-",
            ),
        ),
        notes=("frontend not deployed because backend failed",),
        run_url=RUN_URL,
        failures=(
            "brain-gateway: health check https://api.example.test/health did not pass after 120.0s"
            " (last result: HTTP 503)\nrolled back to the previous image, which is healthy",
        ),
    )


def prune() -> RunSummary:
    def kept(service: str, retention: str) -> ServiceOutcome:
        return ServiceOutcome(
            service=service,
            group="",
            change="-",
            tags=(),
            digest="",
            reference="",
            tests="none",
            deployment="",
            deploy_status="not deployed",
            health="not checked",
            duration_s=1.5,
            rolled_back="-",
            retention=retention,
        )

    return RunSummary(
        command="prune",
        environment="",
        branch="main",
        sha="",
        ok=True,
        started_at=STARTED,
        duration_s=3.0,
        outcomes=(kept("brain-gateway", "kept 10, deleting 3"), kept("client-portal", "kept 4, deleting 0")),
        notes=("dry run: nothing deleted",),
    )


SUCCESS_MARKDOWN = (
    "### deploy staging abc1234: OK\n"
    "\n"
    "Branch staging, commit abc1234, started 2025-03-14 09:26:53 UTC, took 3m 04s. [Run"
    " log](https://github.com/bizoholic-digital/bizosaas/actions/runs/42)\n"
    "\n"
    "| Service | Group | Change | Tags | Digest | Tests | Deployment | Status | Health | Rolled back"
    " | Time |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    "| brain-gateway | backend | built | `staging`, `staging-abc1234` | `sha256:a1a1a1a1a1a1` |"
    " passed | `dpl_backend_01` | done | passed | no | 1m 36s |\n"
    "| bizoholic-frontend | frontend | reused | `staging`, `staging-abc1234` | `sha256:b2b2b2b2b2b2`"
    " | skipped | `dpl_frontend_01` | done | passed | no | 41.0s |\n"
    "\n"
    "**Notes**\n"
    "\n"
    "- bizoholic-frontend unchanged since its last build: image reused\n"
)

SUCCESS_JSON = (
    "{\n"
    '  "schema_version": 1,\n'
    '  "command": "deploy",\n'
    '  "environment": "staging",\n'
    '  "branch": "staging",\n'
    '  "sha": "abc1234f00d",\n'
    '  "ok": true,\n'
    '  "headline": "deploy staging abc1234: OK",\n'
    '  "started_at": "2025-03-14T09:26:53+00:00",\n'
    '  "duration_s": 184.5,\n'
    '  "run_url": "https://github.com/bizoholic-digital/bizosaas/actions/runs/42",\n'
    '  "outcomes": [\n'
    "    {\n"
    '      "service": "brain-gateway",\n'
    '      "group": "backend",\n'
    '      "change": "built",\n'
    '      "tags": [\n'
    '        "staging",\n'
    '        "staging-abc1234"\n'
    "      ],\n"
    '      "digest": "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",\n'
    '      "reference": "ghcr.io/bizoholic-digital/bizosaas-brain-gateway@sha256:a1a1a1a1a1a1a1a1a1a1'
    'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",\n'
    '      "tests": "passed",\n'
    '      "deployment": "dpl_backend_01",\n'
    '      "deploy_status": "done",\n'
    '      "health": "passed",\n'
    '      "duration_s": 96.25,\n'
    '      "rolled_back": "no",\n'
    '      "error": "",\n'
    '      "retention": ""\n'
    "    },\n"
    "    {\n"
    '      "service": "bizoholic-frontend",\n'
    '      "group": "frontend",\n'
    '      "change": "reused",\n'
    '      "tags": [\n'
    '        "staging",\n'
    '        "staging-abc1234"\n'
    "      ],\n"
    '      "digest": "sha256:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",\n'
    '      "reference": "ghcr.io/bizoholic-digital/bizosaas-bizoholic-frontend@sha256:b2b2b2b2b2b2b2b'
    '2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",\n'
    '      "tests": "skipped",\n'
    '      "deployment": "dpl_frontend_01",\n'
    '      "deploy_status": "done",\n'
    '      "health": "passed",\n'
    '      "duration_s": 41.0,\n'
    '      "rolled_back": "no",\n'
    '      "error": "",\n'
    '      "retention": ""\n'
    "    }\n"
    "  ],\n"
    '  "notes": [\n'
    '    "bizoholic-frontend unchanged since its last build: image reused"\n'
    "  ],\n"
    '  "failures": []\n'
    "}\n"
)

ROLLED_BACK_MARKDOWN = (
    "### deploy production 0f1e2d3: FAILED\n"
    "\n"
    "Branch main, commit 0f1e2d3, started 2025-03-14 09:26:53 UTC, took 5m 05s. [Run"
    " log](https://github.com/bizoholic-digital/bizosaas/actions/runs/42)\n"
    "\n"
    "| Service | Group | Change | Tags | Digest | Tests | Deployment | Status | Health | Rolled back"
    " | Time |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    "| brain-gateway | backend | built | `latest`, `main-0f1e2d3` | `sha256:a1a1a1a1a1a1` | passed |"
    " `dpl_backend_02` | done | failed | yes, healthy | 4m 10s |\n"
    "| client-portal | frontend | skipped | - | - | none | - | not deployed | not checked | - | 0.0s"
    " |\n"
    "\n"
    "**Notes**\n"
    "\n"
    "- frontend not deployed because backend failed\n"
    "\n"
    "**Errors**\n"
    "\n"
    "```text\n"
    "brain-gateway: health check https://api.example.test/health did not pass after 120.0s (last"
    " result: HTTP 503)\n"
    "rolled back to the previous image, which is healthy\n"
    "```\n"
)

ROLLED_BACK_JSON = (
    "{\n"
    '  "schema_version": 1,\n'
    '  "command": "deploy",\n'
    '  "environment": "production",\n'
    '  "branch": "main",\n'
    '  "sha": "0f1e2d3c4b5a",\n'
    '  "ok": false,\n'
    '  "headline": "deploy production 0f1e2d3: FAILED",\n'
    '  "started_at": "2025-03-14T09:26:53+00:00",\n'
    '  "duration_s": 305.0,\n'
    '  "run_url": "https://github.com/bizoholic-digital/bizosaas/actions/runs/42",\n'
    '  "outcomes": [\n'
    "    {\n"
    '      "service": "brain-gateway",\n'
    '      "group": "backend",\n'
    '      "change": "built",\n'
    '      "tags": [\n'
    '        "latest",\n'
    '        "main-0f1e2d3"\n'
    "      ],\n"
    '      "digest": "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",\n'
    '      "reference": "ghcr.io/bizoholic-digital/bizosaas-brain-gateway@sha256:a1a1a1a1a1a1a1a1a1a1'
    'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",\n'
    '      "tests": "passed",\n'
    '      "deployment": "dpl_backend_02",\n'
    '      "deploy_status": "done",\n'
    '      "health": "failed",\n'
    '      "duration_s": 250.0,\n'
    '      "rolled_back": "yes, healthy",\n'
    '      "error": "health check https://api.example.test/health did not pass after 120.0s (last'
    ' result: HTTP 503)",\n'
    '      "retention": ""\n'
    "    },\n"
    "    {\n"
    '      "service": "client-portal",\n'
    '      "group": "frontend",\n'
    '      "change": "skipped",\n'
    '      "tags": [],\n'
    '      "digest": "",\n'
    '      "reference": "",\n'
    '      "tests": "none",\n'
    '      "deployment": "",\n'
    '      "deploy_status": "not deployed",\n'
    '      "health": "not checked",\n'
    '      "duration_s": 0.0,\n'
    '      "rolled_back": "-",\n'
    '      "error": "",\n'
    '      "retention": ""\n'
    "    }\n"
    "  ],\n"
    '  "notes": [\n'
    '    "frontend not deployed because backend failed"\n'
    "  ],\n"
    '  "failures": [\n'
    '    "brain-gateway: health check https://api.example.test/health did not pass after 120.0s'
    ' (last result: HTTP 503)\\nrolled back to the previous image, which is healthy"\n'
    "  ]\n"
    "}\n"
)

PRUNE_MARKDOWN = (
    "### prune: OK\n"
    "\n"
    "Branch main, started 2025-03-14 09:26:53 UTC, took 3.0s.\n"
    "\n"
    "| Service | Retention | Time |\n"
    "| --- | --- | --- |\n"
    "| brain-gateway | kept 10, deleting 3 | 1.5s |\n"
    "| client-portal | kept 4, deleting 0 | 1.5s |\n"
    "\n"
    "**Notes**\n"
    "\n"
    "- dry run: nothing deleted\n"
)

PRUNE_JSON = (
    "{\n"
    '  "schema_version": 1,\n'
    '  "command": "prune",\n'
    '  "environment": "",\n'
    '  "branch": "main",\n'
    '  "sha": "",\n'
    '  "ok": true,\n'
    '  "headline": "prune: OK",\n'
    '  "started_at": "2025-03-14T09:26:53+00:00",\n'
    '  "duration_s": 3.0,\n'
    '  "run_url": "",\n'
    '  "outcomes": [\n'
    "    {\n"
    '      "service": "brain-gateway",\n'
    '      "group": "",\n'
    '      "change": "-",\n'
    '      "tags": [],\n'
    '      "digest": "",\n'
    '      "reference": "",\n'
    '      "tests": "none",\n'
    '      "deployment": "",\n'
    '      "deploy_status": "not deployed",\n'
    '      "health": "not checked",\n'
    '      "duration_s": 1.5,\n'
    '      "rolled_back": "-",\n'
    '      "error": "",\n'
    '      "retention": "kept 10, deleting 3"\n'
    "    },\n"
    "    {\n"
    '      "service": "client-portal",\n'
    '      "group": "",\n'
    '      "change": "-",\n'
    '      "tags": [],\n'
    '      "digest": "",\n'
    '      "reference": "",\n'
    '      "tests": "none",\n'
    '      "deployment": "",\n'
    '      "deploy_status": "not deployed",\n'
    '      "health": "not checked",\n'
    '      "duration_s": 1.5,\n'
    '      "rolled_back": "-",\n'
    '      "error": "",\n'
    '      "retention": "kept 4, deleting 0"\n'
    "    }\n"
    "  ],\n"
    '  "notes": [\n'
    '    "dry run: nothing deleted"\n'
    "  ],\n"
    '  "failures": []\n'
    "}\n"
)

ROLLED_BACK_TEXT = (
    "deploy production 0f1e2d3: FAILED\n"
    "branch main, commit 0f1e2d3, started 2025-03-14 09:26:53 UTC, took 5m 05s\n"
    "\n"
    "service        group     change   tags                  digest               tests   "
    "deployment      status        health       rolled back   time\n"
    "brain-gateway  backend   built    latest, main-0f1e2d3  sha256:a1a1a1a1a1a1  passed  "
    "dpl_backend_02  done          failed       yes, healthy  4m 10s\n"
    "client-portal  frontend  skipped  -                     -                    none    "
    "-               not deployed  not checked  -             0.0s\n"
    "\n"
    "notes:\n"
    "  - frontend not deployed because backend failed\n"
    "\n"
    "errors:\n"
    "  - brain-gateway: health check https://api.example.test/health did not pass after 120.0s (last"
    " result: HTTP 503)\n"
    "    rolled back to the previous image, which is healthy\n"
    "\n"
    "run: https://github.com/bizoholic-digital/bizosaas/actions/runs/42\n"
)


@pytest.mark.parametrize(
    ("build", "markdown"),
    [(success, SUCCESS_MARKDOWN), (rolled_back, ROLLED_BACK_MARKDOWN), (prune, PRUNE_MARKDOWN)],
)
def test_markdown_matches_golden(build, markdown):
    """Markdown renders a heading, context line, per-command table, notes and errors."""
    assert render_markdown(build()) == markdown


@pytest.mark.parametrize(
    ("build", "expected"),
    [(success, SUCCESS_JSON), (rolled_back, ROLLED_BACK_JSON), (prune, PRUNE_JSON)],
)
def test_json_matches_golden(build, expected):
    """JSON has every field in a fixed order, full digests and ISO UTC times."""
    assert to_json(build()) == expected


def test_text_matches_golden():
    """Plain text aligns the table and indents multi-line errors under their first line."""
    assert render_text(rolled_back()) == ROLLED_BACK_TEXT


def test_text_headline_for_success():
    """The first text line is the headline: command, environment, short sha, OK."""
    assert render_text(success()).splitlines()[0] == "deploy staging abc1234: OK"


def test_markdown_escapes_pipes_and_flattens_cells():
    """A | or newline inside a value cannot break the table row."""
    summary = rolled_back()
    broken = ServiceOutcome(
        **{f: getattr(summary.outcomes[1], f) for f in ServiceOutcome.__dataclass_fields__}
        | {"deploy_status": "error (exit 1 | see log)\nnext line"}
    )
    markdown = render_markdown(
        RunSummary(**{f: getattr(summary, f) for f in RunSummary.__dataclass_fields__} | {"outcomes": (broken,)})
    )
    row = next(line for line in markdown.splitlines() if line.startswith("| client-portal"))
    assert row == (
        "| client-portal | frontend | skipped | - | - | none | - "
        "| error (exit 1 \\| see log) next line | not checked | - | 0.0s |"
    )


def test_markdown_error_fence_outlasts_backticks_in_the_message():
    """An error containing a ``` run gets a longer fence, so it cannot end the block early."""
    summary = RunSummary(
        command="deploy",
        environment="staging",
        branch="staging",
        sha="abc1234",
        ok=False,
        started_at=STARTED,
        duration_s=1.0,
        outcomes=(),
        notes=(),
        failures=("services.toml: bad value ```x```",),
    )
    assert render_markdown(summary).endswith("\n````text\nservices.toml: bad value ```x```\n````\n")


def test_errors_fall_back_to_service_errors():
    """Without explicit failures, the errors are each failed service's error, in order."""
    summary = rolled_back()
    without = RunSummary(**{f: getattr(summary, f) for f in RunSummary.__dataclass_fields__} | {"failures": ()})
    assert without.errors == (
        "brain-gateway: health check https://api.example.test/health did not pass after 120.0s (last result: HTTP 503)",
    )


def test_unknown_change_value_is_rejected():
    """A misspelt status is caught when the outcome is built, not when it is rendered."""
    with pytest.raises(ValueError, match=r"ServiceOutcome\.change must be one of"):
        ServiceOutcome(
            service="x",
            group="g",
            change="build",  # type: ignore[arg-type]
            tags=(),
            digest="",
            reference="",
            tests="none",
            deployment="",
            deploy_status="",
            health="not checked",
            duration_s=0,
            rolled_back="-",
        )


def test_naive_start_time_is_rejected():
    """A start time without a timezone would render as a wrong UTC time, so it is refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        RunSummary(
            command="deploy",
            environment="staging",
            branch="staging",
            sha="abc",
            ok=True,
            started_at=datetime(2025, 1, 1),
            duration_s=0,
            outcomes=(),
            notes=(),
        )


def test_write_step_summary_appends_when_set(tmp_path):
    """With GITHUB_STEP_SUMMARY set, each call appends, and the call says it wrote."""
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(target)}
    assert write_step_summary("### one", env) is True
    assert write_step_summary("### two\n", env) is True
    assert target.read_text() == "earlier step\n### one\n### two\n"


def test_write_step_summary_does_nothing_outside_actions():
    """Without GITHUB_STEP_SUMMARY nothing is written and the call says so."""
    assert write_step_summary("### one", {}) is False
    assert write_step_summary("### one", {"GITHUB_STEP_SUMMARY": ""}) is False


def test_write_step_summary_unwritable_path_names_it(tmp_path):
    """An unwritable summary path gives one PipelineError naming the path and the variable."""
    with pytest.raises(PipelineError, match=r"summary to .*not-here/summary\.md \(from GITHUB_STEP_SUMMARY\)"):
        write_step_summary("x", {"GITHUB_STEP_SUMMARY": str(tmp_path / "not-here" / "summary.md")})


def test_write_json_round_trips(tmp_path):
    """write_json writes exactly to_json's text, which parses back to the same values."""
    target = tmp_path / "summary.json"
    write_json(rolled_back(), target)
    assert target.read_text() == ROLLED_BACK_JSON
    assert json.loads(target.read_text())["outcomes"][0]["rolled_back"] == "yes, healthy"


def test_write_json_missing_directory_is_a_clear_error(tmp_path):
    """A path in a directory that does not exist names the directory and the fix."""
    target = tmp_path / "missing" / "summary.json"
    with pytest.raises(PipelineError) as caught:
        write_json(success(), target)
    assert str(caught.value) == (
        f"cannot write the JSON summary to {target}: the directory {target.parent} does not exist; "
        "create it first or choose a path in an existing directory"
    )


def test_output_paths_are_checked_before_a_run_as_usage_errors(tmp_path):
    """A missing directory, a directory as the file, an unwritable step summary: exit-2 errors naming the path."""
    missing = tmp_path / "missing" / "summary.json"
    with pytest.raises(UsageError, match=f"the directory {missing.parent} does not exist"):
        check_json_target(missing)
    with pytest.raises(UsageError, match="it is a directory; name a file"):
        check_json_target(tmp_path)
    with pytest.raises(UsageError, match=r"\(from GITHUB_STEP_SUMMARY\)"):
        check_step_summary({"GITHUB_STEP_SUMMARY": str(tmp_path)})
    check_json_target(tmp_path / "summary.json")
    check_step_summary({"GITHUB_STEP_SUMMARY": str(tmp_path / "step.md")})
    check_step_summary({})
    assert not (tmp_path / "summary.json").exists()


def test_run_url_from_env():
    """The run URL is built from the runner's variables; outside Actions it is empty."""
    env = {
        "GITHUB_SERVER_URL": "https://github.com/",
        "GITHUB_REPOSITORY": "bizoholic-digital/bizosaas",
        "GITHUB_RUN_ID": "42",
    }
    assert run_url_from_env(env) == RUN_URL
    assert run_url_from_env({k: v for k, v in env.items() if k != "GITHUB_RUN_ID"}) == ""
    assert run_url_from_env({}) == ""


def test_start_time_is_rendered_in_utc():
    """A start time in another timezone is converted to UTC in every render."""
    summary = success()
    local = RunSummary(
        **{f: getattr(summary, f) for f in RunSummary.__dataclass_fields__}
        | {"started_at": datetime(2025, 3, 14, 14, 56, 53, tzinfo=timezone(timedelta(hours=5, minutes=30)))}
    )
    assert to_json(local) == SUCCESS_JSON
    assert render_markdown(local) == SUCCESS_MARKDOWN
