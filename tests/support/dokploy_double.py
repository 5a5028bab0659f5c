"""A Dokploy double: a real HTTP server on loopback that answers as Dokploy v0.30 does.

Built from how Dokploy serves its API (Next.js route ``pages/api/[...trpc].ts`` in
front of trpc-openapi 0.0.18), byte for byte where clients can tell:

- Next parses a JSON body first (invalid JSON: 400 before auth), then the API key is
  checked on every route: a missing, empty or unknown ``x-api-key`` answers 401 with
  exactly ``{"message":"Unauthorized"}`` (``application/json; charset=utf-8``, 26 bytes).
- HEAD answers 204. Procedure paths are case-insensitive; an unknown path or a wrong
  method answers 404 NOT_FOUND without ``data.path``; a POST whose Content-Type is
  missing or not ``application/json...`` answers 415 with trpc-openapi's messages
  (including its unbalanced quote).
- Input is validated as zod 4 does (400 "Input validation failed" with ``zodError``
  and ``issues``); unknown keys are stripped; numeric query strings are coerced.
- Errors use the tRPC shape ``{"message","code","data":{"code","httpStatus","path",
  "zodError"}}``; successes are ``application/json`` without charset, and a procedure
  returning nothing answers 200 with an empty body.
- A key can be limited to some services and permissions; a refusal is 401 in the
  tRPC shape, never 403.

Deployments run through an in-memory FIFO queue with concurrency 1, as Dokploy's
worker does. The state machine is computed lazily from timestamps at every request
(``advance``), so there is no background task: while a job waits, the service's
status keeps its previous value; when the job starts, the status becomes running
and a row ``{status: running, startedAt}`` appears; when it ends, the row becomes
done or error (``errorMessage`` null, the reason only in the log) with
``finishedAt``. A Dokploy restart turns running rows into ``cancelled``
(``finishedAt`` null), sets the services idle and loses queued jobs.

The control handle scripts outcomes (``script(id, "error")``, ``"stuck"``,
``"cancelled"``, ``"broken"``), durations, injected 5xx / dropped connections /
hangs for the next N requests, someone pressing Deploy (``click_deploy``), an
older Dokploy without a procedure (``remove_procedure``), and keeps a request log.
``Vps`` is a second server whose health endpoints answer from what the last
``done`` deployment applied (200, or 503 for images marked bad). ``install_bizosaas``
and ``services_toml`` lay out the seed's backend and frontend composes on both.

Assumptions where the reference is silent: ``application.saveDockerProvider`` on an
unknown id answers 404 "Application not found"; invalid JSON answers text "Invalid JSON".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import random
import ssl
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipeline.dokploy import DokployClient, default_timeout
from pipeline.retry import RetryPolicy
from pipeline.secret import SecretValue
from tests.support.http_server import serve_asgi

Outcome = Literal["done", "error", "cancelled", "stuck", "broken"]
Kind = Literal["compose", "application"]

ADMIN_KEY = "dk_test_ADMINkey0123456789abcdefghijklmnopqrstuv"
ALL_PERMISSIONS = frozenset({"service:read", "service:create", "deployment:read", "deployment:create", "envVars:write"})
UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'
ERROR_TAIL = "Error occurred \u274c, check the logs for details."
_ALPHABET = string.ascii_letters + string.digits + "_-"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_HTTP_STATUS = {
    "BAD_REQUEST": 400,
    "PARSE_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL_SERVER_ERROR": 500,
}
_FAULT_MESSAGES = {
    "UNSUPPORTED_MEDIA_TYPE": 'Unsupported content-type "text/plain',
    "FORBIDDEN": "Forbidden",
    "BAD_REQUEST": "Bad request",
}
_KEEP_ROWS = 10  # Dokploy prunes to the 10 newest rows per service before each insert


def nanoid(rng: random.Random) -> str:
    """A 21-character id in nanoid's alphabet, as Dokploy's ids are."""
    return "".join(rng.choice(_ALPHABET) for _ in range(21))


def compact(value: object) -> bytes:
    """``JSON.stringify``: no spaces, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# -- records ---------------------------------------------------------------


@dataclass
class KeyGrant:
    """What an API key may do: everything (owner/admin), or some services and permissions."""

    admin: bool = True
    services: frozenset[str] = frozenset()
    permissions: frozenset[str] = ALL_PERMISSIONS


@dataclass
class ComposeRecord:
    """A compose row (the columns clients read)."""

    id: str
    name: str
    app_name: str
    env: str | None
    compose_file: str
    source_type: str
    status: str
    created_at: str
    environment_id: str
    project_id: str
    description: str | None = None
    git_commit: tuple[str, str] | None = None  # (message, hash): git sources rename the row when built


@dataclass
class ApplicationRecord:
    """An application row (the columns clients read)."""

    id: str
    name: str
    app_name: str
    env: str | None
    docker_image: str | None
    registry_url: str | None
    username: str | None
    password: str | None
    source_type: str
    status: str
    created_at: str
    environment_id: str
    project_id: str


@dataclass
class DeploymentRecord:
    """A deployment row, with the log lines ``readLogs`` serves."""

    id: str
    kind: Kind
    service_id: str
    title: str
    description: str | None
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    error_message: str | None
    log_path: str
    logs: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "deploymentId": self.id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "logPath": self.log_path,
            "pid": None,
            "applicationId": self.service_id if self.kind == "application" else None,
            "composeId": self.service_id if self.kind == "compose" else None,
            "serverId": None,
            "isPreviewDeployment": False,
            "previewDeploymentId": None,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "errorMessage": self.error_message,
            "scheduleId": None,
            "backupId": None,
            "rollbackId": None,
            "volumeBackupId": None,
            "buildServerId": None,
        }


@dataclass
class Job:
    """A queued deployment job."""

    id: str
    kind: Kind
    service_id: str
    title: str
    description: str
    type: str
    enqueued_at: float
    outcome: Outcome
    duration_s: float
    error_log: str
    state: str = "waiting"
    processed_at: float | None = None
    ends_at: float | None = None
    row_at: float | None = None
    row: DeploymentRecord | None = None
    applies: dict[str, str] | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the double saw it (never its headers, so never the key)."""

    seq: int
    method: str
    path: str
    procedure: str
    query: dict[str, str]
    body: object
    status: int | str


@dataclass
class Fault:
    """A failure injected into a coming request."""

    status: int | None = None
    drop: bool = False
    hang_s: float = 0.0
    after_handling: bool = False
    procedure: str | None = None


class _Dropped(Exception):
    """Raised after the response started, so uvicorn closes the connection mid-response."""


class _DropResponse(Response):
    """Send headers promising a body, then drop the connection."""

    def __init__(self) -> None:
        super().__init__(b"", 200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise _Dropped("connection dropped by the Dokploy double")


class _IgnoreDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for drops the test asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


_uvicorn_error = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _IgnoreDrops) for f in _uvicorn_error.filters):
    _uvicorn_error.addFilter(_IgnoreDrops())


class TrpcError(Exception):
    """A procedure's error, rendered in the tRPC shape."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- input validation (zod 4's messages) ------------------------------------


@dataclass(frozen=True)
class F:
    """One input field: type, required, nullable, bounds."""

    name: str
    kind: Literal["string", "number", "boolean"] = "string"
    required: bool = True
    nullable: bool = False
    min_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    default: object = None


def _zod_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_MISSING = object()


def validate(data: object, fields: Iterable[F]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stripped input and zod issues for ``data`` against ``fields``."""
    if not isinstance(data, dict):
        received = _zod_type(data)
        return {}, [
            {
                "expected": "object",
                "code": "invalid_type",
                "path": [],
                "message": f"Invalid input: expected object, received {received}",
            }
        ]
    clean: dict[str, Any] = {}
    issues: list[dict[str, Any]] = []
    for f in fields:
        value = data.get(f.name, _MISSING)
        if value is _MISSING:
            if f.required:
                issues.append(_invalid_type(f, "undefined"))
            elif f.default is not None:
                clean[f.name] = f.default
            continue
        if value is None and f.nullable:
            clean[f.name] = None
            continue
        if _zod_type(value) != f.kind:
            issues.append(_invalid_type(f, _zod_type(value)))
            continue
        if f.kind == "string" and f.min_length is not None and len(value) < f.min_length:
            issues.append(
                {
                    "origin": "string",
                    "code": "too_small",
                    "minimum": f.min_length,
                    "inclusive": True,
                    "path": [f.name],
                    "message": f"Too small: expected string to have >={f.min_length} characters",
                }
            )
            continue
        if f.kind == "number" and f.minimum is not None and value < f.minimum:
            issues.append(
                {
                    "origin": "number",
                    "code": "too_small",
                    "minimum": f.minimum,
                    "inclusive": True,
                    "path": [f.name],
                    "message": f"Too small: expected number to be >={f.minimum}",
                }
            )
            continue
        if f.kind == "number" and f.maximum is not None and value > f.maximum:
            issues.append(
                {
                    "origin": "number",
                    "code": "too_big",
                    "maximum": f.maximum,
                    "inclusive": True,
                    "path": [f.name],
                    "message": f"Too big: expected number to be <={f.maximum}",
                }
            )
            continue
        clean[f.name] = value
    return clean, issues


def _invalid_type(f: F, received: str) -> dict[str, Any]:
    return {
        "expected": f.kind,
        "code": "invalid_type",
        "path": [f.name],
        "message": f"Invalid input: expected {f.kind}, received {received}",
    }


@dataclass(frozen=True)
class Procedure:
    """A tRPC procedure as trpc-openapi exposes it."""

    name: str
    method: Literal["GET", "POST"]
    fields: tuple[F, ...]
    permission: str
    id_field: str | None
    handler: Callable[[dict[str, Any]], object]


_EMPTY = object()  # a procedure that returns undefined: 200 with an empty body


# -- the double ------------------------------------------------------------


class DokployDouble:
    """Dokploy's API and deployment worker, in memory; ``app`` is the ASGI app to serve."""

    def __init__(self, *, api_key: str = ADMIN_KEY, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys: dict[str, KeyGrant] = {api_key: KeyGrant()}
        self.admin_key = api_key
        self.clock = clock
        self.rng = random.Random(20260821)
        self.composes: dict[str, ComposeRecord] = {}
        self.applications: dict[str, ApplicationRecord] = {}
        self.rows: list[DeploymentRecord] = []
        self.queue: deque[Job] = deque()
        self.active: Job | None = None
        self.requests: list[RequestRecord] = []
        self.durations: dict[str, float] = {}
        self.default_duration_s = 0.03
        # The worker inserts a job's row only after it has taken the job (queue state
        # "active"): this is how long that takes. 0 inserts it at once.
        self.row_delay_s = 0.0
        self.outcomes: dict[str, deque[tuple[Outcome, str]]] = {}
        self.faults: deque[Fault] = deque()
        self.live: dict[str, dict[str, str]] = {}
        # Answers the docs leave open: compose.update's row may carry the env as stored
        # (encrypted at rest) rather than decrypted as compose.one does; and a broken
        # instance might answer 200 without storing the env at all.
        self.update_answers_stored_env = False
        self.update_loses_env = False
        self.seq = itertools.count(1)
        self._jobs = itertools.count(1)
        self._mono0 = clock()
        self._wall0 = datetime(2026, 8, 21, 9, 0, 0, tzinfo=UTC)
        self._last_finish = self._mono0
        self.released = asyncio.Event()
        self._procedures = {p.name.lower(): p for p in self._table()}
        self.app = Starlette(routes=[Route("/api/{rest:path}", self._endpoint, methods=_METHODS)])

    # -- control handle ----------------------------------------------------

    def add_compose(
        self,
        *,
        compose_id: str | None = None,
        name: str = "backend",
        env: str | None = "",
        compose_file: str = "",
        source_type: str = "raw",
        status: str = "idle",
        git_commit: tuple[str, str] | None = None,
    ) -> ComposeRecord:
        """Create a compose service (``status`` as if it had deployed before, e.g. 'done')."""
        record = ComposeRecord(
            id=compose_id or nanoid(self.rng),
            name=name,
            app_name=f"{name}-{nanoid(self.rng)[:6].lower()}",
            env=env,
            compose_file=compose_file,
            source_type=source_type,
            status=status,
            created_at=self.iso(self.clock()),
            environment_id=nanoid(self.rng),
            project_id=nanoid(self.rng),
            git_commit=git_commit,
        )
        self.composes[record.id] = record
        if status == "done":
            self.live[record.id] = parse_env(env or "")
        return record

    def add_application(
        self,
        *,
        application_id: str | None = None,
        name: str = "app",
        docker_image: str | None = None,
        registry_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        env: str | None = "",
        source_type: str = "docker",
        status: str = "idle",
    ) -> ApplicationRecord:
        """Create an application (``status`` 'done' marks its image as live)."""
        record = ApplicationRecord(
            id=application_id or nanoid(self.rng),
            name=name,
            app_name=f"{name}-{nanoid(self.rng)[:6].lower()}",
            env=env,
            docker_image=docker_image,
            registry_url=registry_url,
            username=username,
            password=password,
            source_type=source_type,
            status=status,
            created_at=self.iso(self.clock()),
            environment_id=nanoid(self.rng),
            project_id=nanoid(self.rng),
        )
        self.applications[record.id] = record
        if status == "done" and docker_image:
            self.live[record.id] = {"image": docker_image}
        return record

    def add_key(self, key: str, *, services: Iterable[str] = (), permissions: Iterable[str] = ALL_PERMISSIONS) -> None:
        """A member's key: access to ``services`` only, with ``permissions``."""
        self.keys[key] = KeyGrant(admin=False, services=frozenset(services), permissions=frozenset(permissions))

    def set_duration(self, service_id: str, seconds: float) -> None:
        """How long each deployment of ``service_id`` runs."""
        self.durations[service_id] = seconds

    def script(self, service_id: str, *outcomes: Outcome, error_log: str = "") -> None:
        """The outcomes of the next deployments of ``service_id``, in order (then 'done')."""
        line = error_log or "Error response from daemon: manifest unknown"
        self.outcomes.setdefault(service_id, deque()).extend((o, line) for o in outcomes)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = None,
        drop: bool = False,
        hang_s: float = 0.0,
        after_handling: bool = False,
        procedure: str | None = None,
    ) -> None:
        """Fail the next ``count`` requests (to ``procedure`` only, if given)."""
        for _ in range(count):
            self.faults.append(
                Fault(status=status, drop=drop, hang_s=hang_s, after_handling=after_handling, procedure=procedure)
            )

    def click_deploy(self, service_id: str, title: str = "Manual deployment") -> None:
        """Someone presses Deploy in the UI: a job is queued for ``service_id``."""
        kind: Kind = "compose" if service_id in self.composes else "application"
        self._enqueue(kind, service_id, title, "", "deploy")

    def remove_procedure(self, name: str) -> None:
        """Behave like an older Dokploy without ``name`` (queueList before v0.28.3, readLogs before v0.29.6)."""
        del self._procedures[name.lower()]

    def restart(self) -> None:
        """Simulate a Dokploy restart: running rows become cancelled, queued jobs are lost."""
        self.advance()
        self._restart()

    def close(self) -> None:
        """Release requests hanging on an injected fault (before the server shuts down)."""
        self.released.set()

    def history(self, service_id: str) -> list[DeploymentRecord]:
        """A service's rows, newest first."""
        self.advance()
        return [r for r in reversed(self.rows) if r.service_id == service_id]

    def calls(self, procedure: str) -> list[RequestRecord]:
        """The logged requests to ``procedure`` (any case)."""
        return [r for r in self.requests if r.procedure.lower() == procedure.lower()]

    def env(self, compose_id: str) -> str | None:
        """A compose's current env string."""
        return self.composes[compose_id].env

    def iso(self, mono: float) -> str:
        """A monotonic instant as ``Date.toISOString()`` would print it."""
        at = self._wall0 + timedelta(seconds=mono - self._mono0)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"

    # -- the worker ----------------------------------------------------------

    def advance(self, now: float | None = None) -> None:
        """Run the queue's state machine up to ``now``: start and finish jobs at their own instants."""
        now = self.clock() if now is None else now
        while True:
            job = self.active
            if job is not None:
                if job.row is None:
                    assert job.row_at is not None
                    if job.row_at > now:
                        return
                    self._insert_row(job, job.row_at)
                    continue
                if job.ends_at is None or job.ends_at > now:
                    return
                self._finish(job, job.ends_at)
                self.active = None
                self._last_finish = job.ends_at
                continue
            if not self.queue:
                return
            job = self.queue.popleft()
            self._start(job, max(job.enqueued_at, self._last_finish))

    def _service(self, job: Job) -> ComposeRecord | ApplicationRecord:
        return self.composes[job.service_id] if job.kind == "compose" else self.applications[job.service_id]

    def _start(self, job: Job, at: float) -> None:
        self.active = job
        job.state = "active"
        job.processed_at = at
        job.row_at = at + self.row_delay_s
        if not self.row_delay_s:
            self._insert_row(job, at)

    def _insert_row(self, job: Job, at: float) -> None:
        service = self._service(job)
        service.status = "running"
        # Rows are appended as jobs start, so list order is creation order.
        kept = [r for r in reversed(self.rows) if r.service_id == job.service_id]
        doomed = {r.id for r in kept[_KEEP_ROWS - 1 :]}
        self.rows = [r for r in self.rows if r.id not in doomed]
        row = DeploymentRecord(
            id=nanoid(self.rng),
            kind=job.kind,
            service_id=job.service_id,
            title=job.title,
            description=job.description or None,
            status="running",
            created_at=self.iso(at),
            started_at=self.iso(at),
            finished_at=None,
            error_message=None,
            log_path=f"/etc/dokploy/logs/{service.app_name}/{service.app_name}-{self.iso(at)}.log",
        )
        job.row = row
        self.rows.append(row)
        if job.outcome == "broken":
            # Row creation failed: Dokploy still inserts an error row, without a log.
            row.status, row.log_path, row.finished_at = "error", "", row.started_at
            row.error_message = "An error have occurred: ENOSPC: no space left on device, open log file"
            service.status = "error"
            job.ends_at = at
            return
        if isinstance(service, ComposeRecord):
            job.applies = parse_env(service.env or "")
            row.logs = [
                "Initializing deployment",
                f"Writing .env next to the compose file ({len(job.applies)} variables)",
                f"Running: docker compose -p {service.app_name} -f ./docker-compose.yml up -d --build --remove-orphans",
            ]
        else:
            job.applies = {"image": service.docker_image or ""}
            row.logs = ["Initializing deployment", f"Pulling {service.docker_image}"]
        job.ends_at = None if job.outcome == "stuck" else at + job.duration_s

    def _finish(self, job: Job, at: float) -> None:
        row, service = job.row, self._service(job)
        assert row is not None
        if job.outcome == "broken":
            return
        if job.outcome == "cancelled":
            self._restart(at)
            return
        row.finished_at = self.iso(at)
        if job.outcome == "done":
            row.status = service.status = "done"
            row.logs.append("Docker Compose Deployed: \u2705" if job.kind == "compose" else "Docker Deployed: \u2705")
            self.live[job.service_id] = dict(job.applies or {})
            if isinstance(service, ComposeRecord) and service.git_commit is not None:
                row.title, row.description = service.git_commit[0], f"Commit: {service.git_commit[1]}"
        else:
            row.status = service.status = "error"
            row.logs += [job.error_log, ERROR_TAIL]

    def _restart(self, at: float | None = None) -> None:
        job = self.active
        if job is not None and job.row is not None and job.row.status == "running":
            job.row.status = "cancelled"
            job.row.logs.append("Dokploy restarted: deployment cancelled")
            self._service(job).status = "idle"
        self.active = None
        self.queue.clear()
        self._last_finish = self.clock() if at is None else at

    def _enqueue(self, kind: Kind, service_id: str, title: str, description: str, type_: str) -> None:
        scripted = self.outcomes.get(service_id)
        outcome, error_log = scripted.popleft() if scripted else ("done", "")
        self.queue.append(
            Job(
                id=f"job-{next(self._jobs)}",
                kind=kind,
                service_id=service_id,
                title=title,
                description=description,
                type=type_,
                enqueued_at=self.clock(),
                outcome=outcome,
                duration_s=self.durations.get(service_id, self.default_duration_s),
                error_log=error_log,
            )
        )
        self.advance()

    # -- HTTP ----------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        self.advance()
        rest = request.path_params["rest"]
        fault = self._take_fault(rest)
        if fault is not None and not fault.after_handling:
            response = await self._faulty(fault, request, rest)
            if response is not None:
                return response
        response, record = await self._handle(request, rest)
        if fault is not None and fault.after_handling:
            self._log(record, f"{record.status} then {'drop' if fault.drop else fault.status or 'hang'}")
            injected = await self._faulty(fault, request, rest, logged=True)
            return injected if injected is not None else response
        self._log(record, record.status)
        return response

    def _take_fault(self, rest: str) -> Fault | None:
        for fault in self.faults:
            if fault.procedure is None or fault.procedure.lower() == rest.lower():
                self.faults.remove(fault)
                return fault
        return None

    async def _faulty(self, fault: Fault, request: Request, rest: str, *, logged: bool = False) -> Response | None:
        """The injected failure's response; None when the request should go on (a hang before handling)."""
        if not logged and (fault.drop or fault.status is not None):
            self._log(
                RequestRecord(
                    next(self.seq), request.method, request.url.path, rest, dict(request.query_params), None, 0
                ),
                "drop" if fault.drop else fault.status or "hang",
            )
        if fault.hang_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), timeout=fault.hang_s)
        if fault.drop:
            return _DropResponse()
        if fault.status is not None:
            if fault.status in (502, 503, 504):
                # What the reverse proxy in front of Dokploy sends while it restarts.
                return PlainTextResponse("Bad Gateway", status_code=fault.status)
            code = next((k for k, v in _HTTP_STATUS.items() if v == fault.status), "INTERNAL_SERVER_ERROR")
            message = _FAULT_MESSAGES.get(code, "Connection terminated unexpectedly")
            return self._error(code, message, rest, status=fault.status)
        return None

    def _log(self, record: RequestRecord, status: int | str) -> None:
        self.requests.append(
            RequestRecord(record.seq, record.method, record.path, record.procedure, record.query, record.body, status)
        )

    async def _handle(self, request: Request, rest: str) -> tuple[Response, RequestRecord]:
        method = request.method
        query = dict(request.query_params)
        content_type = request.headers.get("content-type")
        raw = await request.body()
        body: object = None
        record = RequestRecord(next(self.seq), method, request.url.path, rest, query, None, 0)
        if method in ("POST", "PUT", "PATCH") and content_type and content_type.startswith("application/json"):
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return PlainTextResponse("Invalid JSON", status_code=400), _with(record, 400)
        record = RequestRecord(record.seq, method, request.url.path, rest, query, body, 0)
        grant = self.keys.get(request.headers.get("x-api-key") or "")
        if grant is None:
            response = Response(
                UNAUTHORIZED_BODY, status_code=401, headers={"content-type": "application/json; charset=utf-8"}
            )
            return response, _with(record, 401)
        if method == "HEAD":
            return Response(status_code=204), _with(record, 204)
        procedure = self._procedures.get(rest.lower())
        if procedure is None or procedure.method != method:
            return self._error("NOT_FOUND", "Not found", None), _with(record, 404)
        if method == "POST":
            if not content_type:
                return self._error("UNSUPPORTED_MEDIA_TYPE", "Missing content-type header", procedure.name), _with(
                    record, 415
                )
            if not content_type.startswith("application/json"):
                message = f'Unsupported content-type "{content_type}'
                return self._error("UNSUPPORTED_MEDIA_TYPE", message, procedure.name), _with(record, 415)
            data = body
        else:
            data = {k: _coerce(v, procedure.fields, k) for k, v in query.items()}
        clean, issues = validate(data, procedure.fields)
        if issues:
            field_errors: dict[str, list[str]] = {}
            form_errors: list[str] = []
            for issue in issues:
                if issue["path"]:
                    field_errors.setdefault(str(issue["path"][0]), []).append(issue["message"])
                else:
                    form_errors.append(issue["message"])
            zod = {"formErrors": form_errors, "fieldErrors": field_errors}
            return self._error("BAD_REQUEST", "Input validation failed", procedure.name, zod=zod, issues=issues), _with(
                record, 400
            )
        try:
            self._authorize(grant, procedure, clean)
            result = procedure.handler(clean)
        except TrpcError as e:
            response = self._error(e.code, e.message, procedure.name)
            return response, _with(record, response.status_code)
        if result is _EMPTY:
            return Response(b"", status_code=200, media_type="application/json"), _with(record, 200)
        return Response(compact(result), status_code=200, media_type="application/json"), _with(record, 200)

    def _authorize(self, grant: KeyGrant, procedure: Procedure, data: dict[str, Any]) -> None:
        if grant.admin:
            return
        service_id = data.get(procedure.id_field) if procedure.id_field else None
        if service_id is not None and service_id not in grant.services:
            raise TrpcError("UNAUTHORIZED", "You don't have access to this service")
        if procedure.permission not in grant.permissions:
            raise TrpcError("UNAUTHORIZED", "Permission denied")

    @staticmethod
    def _error(
        code: str,
        message: str,
        path: str | None,
        *,
        zod: dict[str, Any] | None = None,
        issues: list[dict[str, Any]] | None = None,
        status: int | None = None,
    ) -> Response:
        http_status = status or _HTTP_STATUS[code]
        data: dict[str, Any] = {"code": code, "httpStatus": http_status}
        if path is not None:
            data["path"] = path
        data["zodError"] = zod
        body: dict[str, Any] = {"message": message, "code": code, "data": data}
        if issues is not None:
            body["issues"] = issues
        return Response(compact(body), status_code=http_status, media_type="application/json")

    # -- procedures ------------------------------------------------------------

    def _table(self) -> list[Procedure]:
        compose_id = F("composeId", min_length=1)
        application_id = F("applicationId", min_length=1)
        title = (F("title", required=False), F("description", required=False))
        return [
            Procedure("compose.one", "GET", (compose_id,), "service:read", "composeId", self._compose_one),
            Procedure(
                "compose.update",
                "POST",
                (
                    F("composeId"),
                    F("name", required=False, min_length=1),
                    F("description", required=False, nullable=True),
                    F("env", required=False, nullable=True),
                    F("composeFile", required=False),
                    F("sourceType", required=False),
                ),
                "service:create",
                "composeId",
                self._compose_update,
            ),
            Procedure(
                "compose.saveEnvironment",
                "POST",
                (F("composeId"), F("env", nullable=True), F("createEnvFile", "boolean", required=False)),
                "envVars:write",
                "composeId",
                self._compose_save_environment,
            ),
            Procedure(
                "compose.deploy", "POST", (compose_id, *title), "deployment:create", "composeId", self._deploy("deploy")
            ),
            Procedure(
                "compose.redeploy",
                "POST",
                (compose_id, *title),
                "deployment:create",
                "composeId",
                self._deploy("redeploy"),
            ),
            Procedure("application.one", "GET", (application_id,), "service:read", "applicationId", self._app_one),
            Procedure(
                "application.deploy",
                "POST",
                (application_id, *title),
                "deployment:create",
                "applicationId",
                self._app_deploy("deploy"),
            ),
            Procedure(
                "application.redeploy",
                "POST",
                (application_id, *title),
                "deployment:create",
                "applicationId",
                self._app_deploy("redeploy"),
            ),
            Procedure(
                "application.saveDockerProvider",
                "POST",
                (
                    F("dockerImage", nullable=True),
                    F("applicationId"),
                    F("username", nullable=True),
                    F("password", nullable=True),
                    F("registryUrl", nullable=True),
                ),
                "service:create",
                "applicationId",
                self._app_save_docker_provider,
            ),
            Procedure(
                "deployment.allByCompose", "GET", (compose_id,), "deployment:read", "composeId", self._rows("compose")
            ),
            Procedure(
                "deployment.all",
                "GET",
                (application_id,),
                "deployment:read",
                "applicationId",
                self._rows("application"),
            ),
            Procedure(
                "deployment.readLogs",
                "GET",
                (
                    F("deploymentId", min_length=1),
                    F("tail", "number", required=False, minimum=1, maximum=10000, default=100),
                ),
                "deployment:read",
                None,
                self._read_logs,
            ),
            Procedure("deployment.queueList", "GET", (), "deployment:read", None, self._queue_list),
        ]

    def _compose(self, compose_id: str) -> ComposeRecord:
        try:
            return self.composes[compose_id]
        except KeyError:
            raise TrpcError("NOT_FOUND", "Compose not found") from None

    def _application(self, application_id: str) -> ApplicationRecord:
        try:
            return self.applications[application_id]
        except KeyError:
            raise TrpcError("NOT_FOUND", "Application not found") from None

    def _compose_row(self, c: ComposeRecord) -> dict[str, Any]:
        return {
            "composeId": c.id,
            "name": c.name,
            "appName": c.app_name,
            "description": c.description,
            "env": c.env,
            "composeFile": c.compose_file,
            "refreshToken": "rT" + c.id[:10],
            "sourceType": c.source_type,
            "composeType": "docker-compose",
            "repository": None,
            "owner": None,
            "branch": None,
            "autoDeploy": True,
            "composePath": "./docker-compose.yml",
            "suffix": "",
            "randomize": False,
            "isolatedDeployment": False,
            "triggerType": "push",
            "command": "",
            "createEnvFile": True,
            "composeStatus": c.status,
            "environmentId": c.environment_id,
            "createdAt": c.created_at,
            "watchPaths": None,
            "githubId": None,
            "gitlabId": None,
            "bitbucketId": None,
            "giteaId": None,
            "serverId": None,
        }

    def _compose_one(self, data: dict[str, Any]) -> object:
        c = self._compose(data["composeId"])
        rows = [r.json() for r in self.rows if r.service_id == c.id]
        self.rng.shuffle(rows)  # Dokploy's relation query has no ORDER BY
        return {
            **self._compose_row(c),
            "environment": {
                "environmentId": c.environment_id,
                "name": "production",
                "description": "Production environment",
                "createdAt": c.created_at,
                "env": "",
                "projectId": c.project_id,
                "project": {"projectId": c.project_id, "name": "BizOSaaS", "description": None, "env": ""},
            },
            "deployments": rows,
            "mounts": [],
            "domains": [],
            "github": None,
            "gitlab": None,
            "bitbucket": None,
            "gitea": None,
            "server": None,
            "backups": [],
            "hasGitProviderAccess": True,
            "unauthorizedProvider": None,
        }

    def _compose_update(self, data: dict[str, Any]) -> object:
        c = self.composes.get(data["composeId"])
        if c is None:
            return _EMPTY  # updateCompose does no existence check
        columns = {"name": "name", "description": "description", "env": "env", "composeFile": "compose_file"}
        for key, attribute in columns.items():
            if key in data and not (key == "env" and self.update_loses_env):
                setattr(c, attribute, data[key])
        if "sourceType" in data:
            c.source_type = data["sourceType"]
        row = self._compose_row(c)
        if self.update_answers_stored_env and row.get("env"):
            row["env"] = "enc:v1:" + hashlib.sha256(row["env"].encode()).hexdigest()
        return row

    def _compose_save_environment(self, data: dict[str, Any]) -> object:
        c = self.composes.get(data["composeId"])
        if c is None:
            raise TrpcError("BAD_REQUEST", "Error adding environment variables")
        c.env = data["env"]
        return True

    def _deploy(self, type_: str) -> Callable[[dict[str, Any]], object]:
        def handler(data: dict[str, Any]) -> object:
            c = self._compose(data["composeId"])
            default = "Manual deployment" if type_ == "deploy" else "Rebuild deployment"
            self._enqueue("compose", c.id, data.get("title") or default, data.get("description") or "", type_)
            message = "Deployment queued" if type_ == "deploy" else "Redeployment queued"
            return {"success": True, "message": message, "composeId": c.id}

        return handler

    def _app_row(self, a: ApplicationRecord) -> dict[str, Any]:
        return {
            "applicationId": a.id,
            "name": a.name,
            "appName": a.app_name,
            "description": None,
            "env": a.env,
            "buildArgs": None,
            "buildSecrets": None,
            "sourceType": a.source_type,
            "dockerImage": a.docker_image,
            "username": a.username,
            "password": a.password,
            "registryUrl": a.registry_url,
            "applicationStatus": a.status,
            "buildType": "nixpacks",
            "rollbackActive": False,
            "replicas": 1,
            "environmentId": a.environment_id,
            "serverId": None,
            "createdAt": a.created_at,
        }

    def _app_one(self, data: dict[str, Any]) -> object:
        a = self._application(data["applicationId"])
        rows = [r.json() for r in self.rows if r.service_id == a.id]
        self.rng.shuffle(rows)
        return {
            **self._app_row(a),
            "environment": {
                "environmentId": a.environment_id,
                "name": "production",
                "projectId": a.project_id,
                "project": {"projectId": a.project_id, "name": "BizOSaaS", "description": None, "env": ""},
            },
            "domains": [],
            "deployments": rows,
            "mounts": [],
            "redirects": [],
            "security": [],
            "ports": [],
            "registry": None,
            "buildRegistry": None,
            "rollbackRegistry": None,
            "server": None,
            "previewDeployments": [],
            "hasGitProviderAccess": True,
            "unauthorizedProvider": None,
        }

    def _app_deploy(self, type_: str) -> Callable[[dict[str, Any]], object]:
        def handler(data: dict[str, Any]) -> object:
            a = self._application(data["applicationId"])
            default = "Manual deployment" if type_ == "deploy" else "Rebuild deployment"
            self._enqueue("application", a.id, data.get("title") or default, data.get("description") or "", type_)
            return _EMPTY

        return handler

    def _app_save_docker_provider(self, data: dict[str, Any]) -> object:
        a = self._application(data["applicationId"])
        a.docker_image, a.username = data["dockerImage"], data["username"]
        a.password, a.registry_url = data["password"], data["registryUrl"]
        a.source_type, a.status = "docker", "idle"
        return True

    def _rows(self, kind: Kind) -> Callable[[dict[str, Any]], object]:
        def handler(data: dict[str, Any]) -> object:
            service_id = data["composeId" if kind == "compose" else "applicationId"]
            # ORDER BY createdAt DESC; rows are appended in creation order.
            return [r.json() for r in reversed(self.rows) if r.kind == kind and r.service_id == service_id]

        return handler

    def _read_logs(self, data: dict[str, Any]) -> object:
        row = next((r for r in self.rows if r.id == data["deploymentId"]), None)
        if row is None:
            raise TrpcError("NOT_FOUND", "Deployment not found")
        if not row.log_path:
            return ""
        return "\n".join(row.logs[-int(data.get("tail", 100)) :])

    def _queue_list(self, data: dict[str, Any]) -> object:
        jobs = ([self.active] if self.active is not None else []) + list(self.queue)
        result = []
        for job in jobs:
            service = self._service(job)
            href = (
                f"/dashboard/project/{service.project_id}/environment/{service.environment_id}"
                f"/services/{job.kind}/{job.service_id}"
            )
            entry: dict[str, Any] = {
                "id": job.id,
                "name": "deployments",
                "data": {
                    f"{job.kind}Id": job.service_id,
                    "titleLog": job.title,
                    "descriptionLog": job.description,
                    "type": job.type,
                    "applicationType": job.kind,
                    "server": False,
                },
                "timestamp": self._ms(job.enqueued_at),
                "state": job.state,
                "servicePath": {"href": href, "label": service.name},
            }
            if job.processed_at is not None:
                entry["processedOn"] = self._ms(job.processed_at)
            result.append(entry)
        result.sort(key=lambda e: e["timestamp"], reverse=True)
        return result

    def _ms(self, mono: float) -> int:
        return int((self._wall0.timestamp() + mono - self._mono0) * 1000)


def _with(record: RequestRecord, status: int) -> RequestRecord:
    return RequestRecord(record.seq, record.method, record.path, record.procedure, record.query, record.body, status)


def _coerce(value: str, fields: Iterable[F], name: str) -> object:
    """trpc-openapi turns numeric query strings into numbers where the schema wants one."""
    wants_number = any(f.name == name and f.kind == "number" for f in fields)
    if wants_number:
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def parse_env(env: str) -> dict[str, str]:
    """What ``docker compose`` reads from the ``.env`` Dokploy writes (a plain, independent parser)."""
    values = {}
    for raw in env.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[:1] in value[1:]:
            value = value[1 : value.index(value[0], 1)]
        elif " #" in value:
            value = value[: value.index(" #")].rstrip()
        values[name.strip()] = value
    return values


# -- the VPS the services run on --------------------------------------------


@dataclass(frozen=True)
class HealthRoute:
    """A health endpoint backed by one service's live image."""

    service_id: str
    variable: str  # the compose env variable holding the image; "image" for an application
    delay_s: float = 0.0  # answer this late (a container still booting)


class Vps:
    """Health endpoints that answer from what is live: 200 for good images, 503 for bad or none."""

    def __init__(self, dokploy: DokployDouble) -> None:
        self.dokploy = dokploy
        self.routes: dict[str, HealthRoute] = {}
        self.bad: set[str] = set()
        self.requests: list[tuple[int, str, int]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint)])

    def serve(self, path: str, *, service_id: str, variable: str = "image", delay_s: float = 0.0) -> None:
        """Answer ``path`` from the live value of ``variable`` in ``service_id``."""
        self.routes["/" + path.lstrip("/")] = HealthRoute(service_id, variable, delay_s)

    def mark_bad(self, *images: str) -> None:
        """Images whose containers fail their health checks."""
        self.bad.update(images)

    async def _endpoint(self, request: Request) -> Response:
        self.dokploy.advance()
        route = self.routes.get(request.url.path)
        if route is None:
            return self._answer(request, PlainTextResponse("404 page not found", status_code=404))
        if route.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dokploy.released.wait(), timeout=route.delay_s)
        image = self.dokploy.live.get(route.service_id, {}).get(route.variable)
        if not image:
            return self._answer(request, JSONResponse({"status": "down", "detail": "not deployed"}, 503))
        if image in self.bad:
            return self._answer(request, JSONResponse({"status": "unhealthy", "image": image}, 503))
        return self._answer(request, JSONResponse({"status": "ok", "image": image}, 200))

    def _answer(self, request: Request, response: Response) -> Response:
        self.requests.append((next(self.dokploy.seq), request.url.path, response.status_code))
        return response


# -- fixtures ----------------------------------------------------------------


@dataclass(frozen=True)
class RunningDokploy:
    """A served double: its base URL, the admin key, and the control handle."""

    url: str
    api_key: str
    double: DokployDouble

    @property
    def secret(self) -> SecretValue:
        return SecretValue("DOKPLOY_API_KEY", self.api_key)

    def client(
        self, http: httpx.AsyncClient, *, key: str | None = None, retry: RetryPolicy | None = None
    ) -> DokployClient:
        """A client for this double (fast retries unless ``retry`` is given)."""
        return DokployClient(
            http,
            base_url=self.url,
            api_key=SecretValue("DOKPLOY_API_KEY", key if key is not None else self.api_key),
            retry=retry or FAST_RETRY,
        )


@dataclass(frozen=True)
class RunningVps:
    """A served VPS: its base URL and the control handle."""

    url: str
    vps: Vps


FAST_RETRY = RetryPolicy(attempts=3, timeout_s=2.0, wait_initial_s=0.005, wait_max_s=0.02)


@functools.cache
def _tls() -> ssl.SSLContext:
    # Building a default context (loading CA certificates) takes ~0.1 s; loopback never uses it.
    return ssl.create_default_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client with the pipeline's explicit timeouts."""
    kwargs.setdefault("timeout", default_timeout())
    kwargs.setdefault("verify", _tls())
    return httpx.AsyncClient(**kwargs)


@pytest.fixture
async def dokploy() -> AsyncIterator[RunningDokploy]:
    """A Dokploy double served on loopback, with an admin key."""
    double = DokployDouble()
    async with serve_asgi(double.app) as url:
        try:
            yield RunningDokploy(url=url, api_key=double.admin_key, double=double)
        finally:
            double.close()


@pytest.fixture
async def vps(dokploy: RunningDokploy) -> AsyncIterator[RunningVps]:
    """The VPS whose health endpoints follow what the Dokploy double deployed."""
    machine = Vps(dokploy.double)
    async with serve_asgi(machine.app) as url:
        try:
            yield RunningVps(url=url, vps=machine)
        finally:
            dokploy.double.close()


# -- the BizOSaaS layout, on loopback ----------------------------------------

BACKEND_ID = "bkndCompose0staging1"
FRONTEND_ID = "frntCompose0staging1"
OLD_TAG = "staging-0000000"
IMAGE_PREFIX = "ghcr.io/bizoholic-digital/bizosaas-"

BACKEND_ENV = (
    "# BizOSaaS backend (staging)\n"
    f'export BRAIN_GATEWAY_IMAGE="{IMAGE_PREFIX}brain-gateway:{OLD_TAG}"\n'
    "POSTGRES_HOST=postgres\n"
    "\n"
    "SALEOR_IMAGE=ghcr.io/saleor/saleor:3.20   # third party, pinned by hand\n"
)
FRONTEND_ENV = (
    f"BIZOHOLIC_FRONTEND_IMAGE={IMAGE_PREFIX}bizoholic-frontend:{OLD_TAG}\r\n"
    f"CLIENT_PORTAL_IMAGE='{IMAGE_PREFIX}client-portal:{OLD_TAG}'\r\n"
    "NEXT_PUBLIC_API_URL=https://api.bizoholic.test\r\n"
)
BACKEND_FILE = "services:\n  brain:\n    image: ${BRAIN_GATEWAY_IMAGE}\n  saleor:\n    image: ${SALEOR_IMAGE}\n"
FRONTEND_FILE = "\n".join(
    [
        "services:",
        "  bizoholic:",
        "    image: ${BIZOHOLIC_FRONTEND_IMAGE}",
        "  portal:",
        "    image: ${CLIENT_PORTAL_IMAGE:?set it}",
        "",
    ]
)


def services_toml(dokploy_url: str, vps_url: str, *, health_timeout_s: float = 0.5) -> str:
    """A services.toml for the seed's two groups, pointing at the double and the VPS on loopback."""
    return f"""
[registry]
host = "ghcr.io"
namespace = "bizoholic-digital"
image_prefix = "bizosaas-"

[dokploy]
url = "{dokploy_url}"

[environments.staging]
branch = "staging"
tags = ["staging-{{sha}}"]

[services.brain-gateway]
context = "bizosaas/ai/services/bizosaas-brain"

[services.bizoholic-frontend]
context = "bizosaas/frontend/apps/bizoholic-frontend"
dockerfile = "Dockerfile.production"

[services.client-portal]
context = "bizosaas/frontend/apps/client-portal"

[[groups]]
name = "backend"
services = ["brain-gateway"]
[groups.targets.staging]
compose_id = "{BACKEND_ID}"
[[groups.targets.staging.health]]
url = "{vps_url}/backend/health"
contains = "ok"
timeout = {health_timeout_s}

[[groups]]
name = "frontend"
services = ["bizoholic-frontend", "client-portal"]
[groups.targets.staging]
compose_id = "{FRONTEND_ID}"
[[groups.targets.staging.health]]
url = "{vps_url}/bizoholic/health"
timeout = {health_timeout_s}
[[groups.targets.staging.health]]
url = "{vps_url}/portal/health"
timeout = {health_timeout_s}
"""


def install_bizosaas(
    double: DokployDouble,
    vps: Vps,
    *,
    backend_s: float = 0.03,
    frontend_s: float = 0.02,
) -> None:
    """Create the backend and frontend composes (already deployed once) and their health endpoints."""
    double.add_compose(
        compose_id=BACKEND_ID, name="bizosaas-backend", env=BACKEND_ENV, compose_file=BACKEND_FILE, status="done"
    )
    double.add_compose(
        compose_id=FRONTEND_ID, name="bizosaas-frontend", env=FRONTEND_ENV, compose_file=FRONTEND_FILE, status="done"
    )
    double.set_duration(BACKEND_ID, backend_s)
    double.set_duration(FRONTEND_ID, frontend_s)
    vps.serve("/backend/health", service_id=BACKEND_ID, variable="BRAIN_GATEWAY_IMAGE")
    vps.serve("/bizoholic/health", service_id=FRONTEND_ID, variable="BIZOHOLIC_FRONTEND_IMAGE")
    vps.serve("/portal/health", service_id=FRONTEND_ID, variable="CLIENT_PORTAL_IMAGE")


def pinned(service: str, digit: str = "1") -> str:
    """A digest-pinned reference for one of the BizOSaaS images."""
    return f"{IMAGE_PREFIX}{service}@sha256:{digit * 64}"
