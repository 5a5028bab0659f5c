"""Dokploy's HTTP API: the few calls a deploy needs, answered as small dataclasses.

Facts this client relies on (Dokploy v0.30, served by trpc-openapi 0.0.18):

- Every tRPC procedure is ``<base>/api/<router>.<procedure>``; queries are GET with
  plain query parameters, mutations are POST with the raw JSON input object.
- Only the ``x-api-key`` header authenticates (``Authorization: Bearer`` is refused).
- A 401 comes in two shapes: exactly ``{"message":"Unauthorized"}`` when the key is
  missing, wrong, expired or over its rate limit (Dokploy never answers 429), and the
  tRPC error shape when a valid key lacks permission on one service (never 403).
- A 200 may have an empty body (``application.deploy``, ``compose.update`` of an
  unknown id), so a body is decoded only when there is one.
- ``compose.deploy`` / ``application.deploy`` only enqueue a job and return no
  deployment id; ``pipeline.deploy`` finds the deployment row itself.

Retries differ by risk. Reads are retried on transport errors, timeouts and 5xx.
Mutations are retried only when the connection was never established, because a
deploy request that reached Dokploy may already be queued and must not run twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import httpx

from pipeline.config import DokployTarget
from pipeline.errors import (
    DokployAuthError,
    DokployError,
    DokployNotFoundError,
    DokployPermissionError,
    DokployUnavailableError,
    DokployValidationError,
    UsageError,
)
from pipeline.retry import RetryPolicy, retry
from pipeline.secret import SecretValue, redact

DEFAULT_RETRY: Final = RetryPolicy(attempts=4, timeout_s=30.0, wait_initial_s=0.5, wait_max_s=5.0)
TERMINAL_STATUSES: Final = frozenset({"done", "error", "cancelled"})
_UNAUTHORIZED: Final = {"message": "Unauthorized"}
_EXCERPT = 300


def default_timeout() -> httpx.Timeout:
    """5 s to connect, 15 s for everything else: a healthy Dokploy answers in well under a second."""
    return httpx.Timeout(15.0, connect=5.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Compose:
    """A Dokploy compose service, as ``compose.one`` describes it."""

    id: str
    name: str
    app_name: str
    # The services' own settings, secrets among them: never in a repr.
    env: str = field(repr=False)
    status: str
    compose_file: str = field(repr=False)
    source_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """A Dokploy application, as ``application.one`` describes it (registry password kept secret)."""

    id: str
    name: str
    status: str
    source_type: str
    docker_image: str
    registry_url: str
    username: str
    password: SecretValue | None
    env: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One row of a service's deployment history; ``status`` is running, done, error or cancelled."""

    id: str
    status: str
    title: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    error_message: str | None

    @property
    def finished(self) -> bool:
        """Whether the row reached a final status."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedJob:
    """A deployment job still in Dokploy's queue; ``state`` is waiting or active."""

    id: str
    state: str
    title: str
    type: str


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a call is about, for messages: ``compose abc``."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind} '{self.id}'"


class _ServerError(Exception):
    """A 5xx answer to a read, raised only so that ``retry`` sees it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class DokployClient:
    """Calls Dokploy with one API key over an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: SecretValue,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        timeout = http.timeout
        if None in (timeout.connect, timeout.read, timeout.write, timeout.pool):
            raise UsageError(
                "the HTTP client given to DokployClient has no timeout on some phase; "
                "create it with httpx.AsyncClient(timeout=pipeline.dokploy.default_timeout())"
            )
        base = base_url.strip().rstrip("/")
        # People paste the API root from the docs; the procedures live under it anyway.
        base = base.removesuffix("/api")
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", base):
            raise UsageError(
                f"Dokploy URL {base_url!r} is not an http(s) URL; pass the panel's address, "
                "e.g. --dokploy-url https://dokploy.example.com"
            )
        self._http = http
        self._base = base
        self._key = api_key
        self._retry = retry

    def __repr__(self) -> str:
        return f"DokployClient(base_url={self._base!r}, api_key={self._key!r})"

    @property
    def base_url(self) -> str:
        """The panel's address, without a trailing slash."""
        return self._base

    # -- reads -------------------------------------------------------------

    async def compose(self, compose_id: str) -> Compose:
        """The compose service ``compose_id`` (``compose.one``)."""
        subject = _Subject("compose", compose_id)
        row = _object(await self._call("GET", "compose.one", subject, params={"composeId": compose_id}), subject)
        return Compose(
            id=_text(row, "composeId", subject),
            name=_text(row, "name", subject),
            app_name=_text(row, "appName", subject),
            env=_text(row, "env", subject),
            status=_text(row, "composeStatus", subject),
            compose_file=_text(row, "composeFile", subject),
            source_type=_text(row, "sourceType", subject),
        )

    async def application(self, application_id: str) -> Application:
        """The application ``application_id`` (``application.one``)."""
        subject = _Subject("application", application_id)
        row = _object(
            await self._call("GET", "application.one", subject, params={"applicationId": application_id}),
            subject,
        )
        password = _text(row, "password", subject)
        return Application(
            id=_text(row, "applicationId", subject),
            name=_text(row, "name", subject),
            status=_text(row, "applicationStatus", subject),
            source_type=_text(row, "sourceType", subject),
            docker_image=_text(row, "dockerImage", subject),
            registry_url=_text(row, "registryUrl", subject),
            username=_text(row, "username", subject),
            password=SecretValue(f"registry password of application {application_id}", password) if password else None,
            env=_text(row, "env", subject),
        )

    async def deployments(self, target: DokployTarget) -> list[Deployment]:
        """The target's deployments, newest first, as Dokploy orders them (``allByCompose`` / ``all``)."""
        subject = _Subject(target.kind, target.id)
        procedure, key = (
            ("deployment.allByCompose", "composeId")
            if target.kind == "compose"
            else ("deployment.all", "applicationId")
        )
        rows = await self._call("GET", procedure, subject, params={key: target.id})
        if not isinstance(rows, list):
            raise self._unexpected(procedure, "a list of deployments", rows)
        return [_deployment(_object(row, subject), subject) for row in rows]

    async def read_logs(self, deployment_id: str, tail: int = 50) -> str:
        """The last ``tail`` lines of a deployment's log (``deployment.readLogs``, Dokploy v0.29.6+)."""
        subject = _Subject("deployment", deployment_id)
        text = await self._call(
            "GET", "deployment.readLogs", subject, params={"deploymentId": deployment_id, "tail": tail}
        )
        if text is None:
            return ""
        if not isinstance(text, str):
            raise self._unexpected("deployment.readLogs", "a string", text)
        return text

    async def queue(self, target: DokployTarget) -> list[QueuedJob]:
        """The target's jobs still waiting or running in Dokploy's queue (``deployment.queueList``)."""
        jobs = await self._call("GET", "deployment.queueList", None)
        if not isinstance(jobs, list):
            raise self._unexpected("deployment.queueList", "a list of jobs", jobs)
        result = []
        for job in jobs:
            data = job.get("data") if isinstance(job, dict) else None
            if not isinstance(data, dict) or data.get(f"{target.kind}Id") != target.id:
                continue
            result.append(
                QueuedJob(
                    id=str(job.get("id", "")),
                    state=str(job.get("state", "")),
                    title=str(data.get("titleLog") or ""),
                    type=str(data.get("type") or ""),
                )
            )
        return result

    # -- writes ------------------------------------------------------------

    async def trigger(self, target: DokployTarget, *, title: str, description: str = "") -> None:
        """Queue a deployment of ``target`` (``compose.deploy`` / ``application.deploy``)."""
        subject = _Subject(target.kind, target.id)
        procedure = f"{target.kind}.deploy"
        body = {f"{target.kind}Id": target.id, "title": title, "description": description}
        answer = await self._call("POST", procedure, subject, body=body)
        # compose.deploy answers {"success": true, "message": "Deployment queued", ...}
        # (an empty body before v0.25.8); application.deploy answers an empty body, or
        # true on Cloud. Only an explicit refusal is an error.
        if answer is False or (isinstance(answer, dict) and answer.get("success") is False):
            raise DokployError(
                f"Dokploy at {self._base} refused to queue {procedure} for {subject}: {_excerpt(answer)}",
                endpoint=f"POST /api/{procedure}",
                status=200,
            )

    async def save_compose_env(self, compose_id: str, env: str) -> None:
        """Replace the whole env of compose ``compose_id`` with ``env``."""
        subject = _Subject("compose", compose_id)
        # compose.update, not compose.saveEnvironment: both replace the whole env, but
        # update answers with the stored row, so the write can usually be checked without
        # another read, while saveEnvironment only answers ``true``. Update does not check
        # that the id exists and answers an empty body instead, mapped to "not found".
        row = await self._call("POST", "compose.update", subject, body={"composeId": compose_id, "env": env})
        if row is None:
            raise self._not_found(
                subject, "compose.update answered with an empty body", endpoint="POST /api/compose.update"
            )
        stored = _object(row, subject).get("env")
        # update answers with the row as stored, which may hold the env encrypted at
        # rest; compose.one answers it decrypted, so a mismatch is settled by reading it.
        if (stored or "") != env and (await self.compose(compose_id)).env != env:
            raise DokployError(
                f"Dokploy at {self._base} did not store the new env of {subject} "
                "(compose.one shows a different env); check the service's Environment tab",
                endpoint="POST /api/compose.update",
                status=200,
            )

    async def save_docker_provider(
        self,
        application_id: str,
        *,
        image: str,
        registry_url: str,
        username: str,
        password: SecretValue | None,
    ) -> None:
        """Point application ``application_id`` at ``image``, keeping the given registry settings."""
        subject = _Subject("application", application_id)
        body = {
            "applicationId": application_id,
            "dockerImage": image,
            "registryUrl": registry_url or None,
            "username": username or None,
            "password": password.reveal() if password is not None else None,
        }
        answer = await self._call("POST", "application.saveDockerProvider", subject, body=body, extra=password)
        if answer is not True:
            raise self._unexpected("application.saveDockerProvider", "true", answer)

    # -- plumbing ----------------------------------------------------------

    async def _call(
        self,
        method: str,
        procedure: str,
        subject: _Subject | None,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        extra: SecretValue | None = None,
    ) -> object:
        """One procedure call with retries and error mapping; the decoded body, or None when empty."""
        url = f"{self._base}/api/{procedure}"
        is_read = method == "GET"
        attempts = 0
        started = anyio.current_time()

        async def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            response = await self._http.request(
                method,
                url,
                params=params,
                json=body,
                headers={"x-api-key": self._key.reveal(), "accept": "application/json"},
            )
            if is_read and response.status_code >= 500:
                raise _ServerError(response)
            return response

        def said(reason: str) -> str:
            took = anyio.current_time() - started
            tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            return redact(
                f"Dokploy at {self._base} did not answer {procedure} ({reason}) after {tries} over {took:.1f}s",
                self._key,
                extra,
            )

        try:
            response = await retry(attempt, policy=self._retry, retry_on=_retry_read if is_read else _retry_write)
        except _ServerError as e:
            raise DokployUnavailableError(
                said(f"HTTP {e.response.status_code}: {_excerpt(e.response.text)}")
                + "; check that Dokploy is running and healthy",
                endpoint=f"{method} /api/{procedure}",
                status=e.response.status_code,
            ) from None
        except httpx.RequestError as e:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
                fix = "; check dokploy.url and that Dokploy is running and reachable"
            elif is_read:
                fix = "; check that Dokploy is running and healthy"
            else:
                fix = (
                    f"; the request was sent, so it was not repeated: Dokploy may have acted on it. "
                    f"Check {subject or 'the service'} in the Dokploy UI ({self._base}/dashboard/projects) "
                    "before running again"
                )
            raise DokployUnavailableError(said(reason) + fix, endpoint=f"{method} /api/{procedure}") from e

        if response.status_code >= 500:
            raise DokployUnavailableError(
                said(f"HTTP {response.status_code}: {_excerpt(response.text)}")
                + f"; not repeated, because Dokploy may have acted on it: check {subject or 'the service'} "
                f"in the Dokploy UI ({self._base}/dashboard/projects)",
                endpoint=f"{method} /api/{procedure}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise self._error(method, procedure, subject, response, extra)
        if not response.content.strip():
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            raise DokployError(
                redact(
                    f"Dokploy at {self._base} answered {procedure} with something that is not JSON "
                    f"({_excerpt(response.text)}); check that dokploy.url is the Dokploy panel's address",
                    self._key,
                    extra,
                ),
                endpoint=f"{method} /api/{procedure}",
                status=200,
            ) from None

    def _error(
        self,
        method: str,
        procedure: str,
        subject: _Subject | None,
        response: httpx.Response,
        extra: SecretValue | None,
    ) -> DokployError:
        """Map a non-200 answer to the error that says what is wrong and how to fix it."""
        status = response.status_code
        endpoint = f"{method} /api/{procedure}"
        try:
            body: object = json.loads(response.content) if response.content.strip() else None
        except ValueError:
            body = None
        trpc = body if isinstance(body, dict) and "code" in body and "message" in body else None
        message = str(trpc["message"]) if trpc else _excerpt(response.text)
        data = trpc.get("data") if trpc else None
        about = f" on {subject}" if subject else ""

        def fail(cls: type[DokployError], text: str) -> DokployError:
            return cls(redact(text, self._key, extra), endpoint=endpoint, status=status)

        if status == 401 and body == _UNAUTHORIZED:
            return fail(
                DokployAuthError,
                f"Dokploy at {self._base} rejected the API key (missing, wrong, expired or rate-limited): "
                f"check the key in {self._key.name} (--dokploy-key)",
            )
        if status == 401 and trpc:
            return fail(
                DokployPermissionError,
                f"Dokploy at {self._base} refused {procedure}{about} ({message}): the key lacks permission "
                "on this service: use a key of an owner/admin or grant access",
            )
        if status == 404 and trpc and isinstance(data, dict) and "path" in data and subject:
            return self._not_found(subject, f"{procedure}: {message}", endpoint=endpoint)
        if status == 404:
            return fail(
                DokployError,
                f"Dokploy at {self._base} has no endpoint {endpoint} (404 {message}); check that dokploy.url "
                "is the Dokploy panel's address and that Dokploy is v0.29.6 or newer",
            )
        if status == 400 and trpc:
            return fail(
                DokployValidationError,
                f"Dokploy rejected the input of {procedure}{about}: {_validation_details(trpc)}",
            )
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            return fail(
                DokployError,
                f"Dokploy at {self._base} redirected {procedure} to {location}; set dokploy.url to the address "
                "the panel is really served from (https:// rather than http://?)",
            )
        return fail(DokployError, f"Dokploy at {self._base} answered {status} to {procedure}{about}: {message}")

    def _not_found(self, subject: _Subject, detail: str, *, endpoint: str) -> DokployNotFoundError:
        """The id does not exist: say where the right one is found."""
        if subject.kind == "deployment":
            hint = (
                "Dokploy keeps only the 10 newest deployments of a service; see the service's "
                f"Deployments tab at {self._base}/dashboard/projects"
            )
        else:
            hint = (
                f"check {subject.kind}_id in services.toml: open the service in the Dokploy UI "
                f"({self._base}/dashboard/projects); its id ends the page address "
                f"(.../services/{subject.kind}/<id>)"
            )
        return DokployNotFoundError(
            redact(f"Dokploy at {self._base} has no {subject} ({detail}); {hint}", self._key),
            endpoint=endpoint,
            status=404,
        )

    def _unexpected(self, procedure: str, expected: str, got: object) -> DokployError:
        return DokployError(
            redact(
                f"Dokploy at {self._base} answered {procedure} with {_excerpt(got)} where {expected} was "
                "expected; is this Dokploy v0.29.6 or newer?",
                self._key,
            ),
            endpoint=f"/api/{procedure}",
            status=200,
        )


def _retry_read(error: BaseException) -> bool | float:
    """Reads are safe to repeat: retry transport errors and 5xx, honouring Retry-After."""
    if isinstance(error, _ServerError):
        after = error.response.headers.get("retry-after", "")
        return float(after) if after.isdigit() else True
    return isinstance(error, httpx.TransportError) and not isinstance(error, httpx.UnsupportedProtocol)


def _retry_write(error: BaseException) -> bool:
    """Writes are repeated only when no connection was made, so the request provably never left."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


def _validation_details(trpc: dict[str, Any]) -> str:
    """``composeId: Too small: ...`` from tRPC's ``issues`` or zod's ``fieldErrors``, else the message."""
    issues = trpc.get("issues")
    if isinstance(issues, list) and issues:
        parts = []
        for issue in issues:
            if isinstance(issue, dict):
                path = ".".join(str(p) for p in issue.get("path", [])) or "input"
                parts.append(f"{path}: {issue.get('message', '?')}")
        if parts:
            return "; ".join(parts)
    data = trpc.get("data")
    zod = data.get("zodError") if isinstance(data, dict) else None
    if isinstance(zod, dict):
        fields = zod.get("fieldErrors") or {}
        parts = [f"{name}: {', '.join(map(str, errs))}" for name, errs in fields.items() if errs]
        parts += [str(e) for e in zod.get("formErrors") or []]
        if parts:
            return "; ".join(parts)
    return str(trpc.get("message", "?"))


def _object(value: object, subject: _Subject) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DokployError(f"Dokploy answered about {subject} with {_excerpt(value)} where an object was expected")
    return value


def _text(row: dict[str, Any], key: str, subject: _Subject) -> str:
    """A string column; Dokploy sends null for empty ones (``env`` of a new service)."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        # The value itself is not shown: the column may hold a password or an env.
        raise DokployError(
            f"Dokploy answered about {subject} with a {type(value).__name__} in {key} where a string was expected"
        )
    return value


def _optional(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


def _deployment(row: dict[str, Any], subject: _Subject) -> Deployment:
    return Deployment(
        id=_text(row, "deploymentId", subject),
        status=_text(row, "status", subject),
        title=_text(row, "title", subject),
        created_at=_text(row, "createdAt", subject),
        started_at=_optional(row, "startedAt"),
        finished_at=_optional(row, "finishedAt"),
        error_message=_optional(row, "errorMessage"),
    )


def _excerpt(value: object) -> str:
    """A short, single-line rendering of a body for messages."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."
