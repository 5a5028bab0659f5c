"""A real OCI registry on 127.0.0.1 for tests and benches: Debian's docker-registry 2.8.2.

Each fixture starts ``/usr/bin/docker-registry serve`` with its own config in a
temp dir (a start takes ~50 ms), waits for ``GET /v2/`` and kills it afterwards.
Variants: deletes disabled (405), htpasswd Basic auth, and token auth with a
small token server that mints ES256 JWTs the way the Docker token spec says,
so the Bearer flow, refused passwords and missing scopes happen for real.
``FaultProxy`` sits in front of a registry and answers chosen requests with
429/5xx, to exercise retries against real registry traffic.

Fixtures (add ``"tests.support.registry"`` to ``pytest_plugins``): ``registry``,
``registry_without_delete``, ``registry_with_basic_auth``,
``registry_with_token_auth``, ``fault_proxy``.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REGISTRY_BINARY = "/usr/bin/docker-registry"
SKIP_REASON = "docker-registry not installed: apt-get install docker-registry (.ci/run does this)"
_START_DEADLINE_S = 10.0


@dataclass(frozen=True)
class RunningRegistry:
    """A registry process: ``host`` is what RegistryClient takes, ``url`` its base."""

    host: str
    url: str
    root: Path
    log: Path


@contextmanager
def serve_asgi(app: Any, *, lifespan: bool = False) -> Iterator[str]:
    """Run an ASGI app on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on" if lifespan else "off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if lifespan:  # wait for the app's startup, where it opens what it needs
        deadline = time.monotonic() + _START_DEADLINE_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def loopback_http() -> httpx.AsyncClient:
    """An httpx client for tests; all share one SSL context, since building one costs ~50 ms."""
    return httpx.AsyncClient(verify=_ssl_context())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int, *, delete: bool, auth: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        # A fixed secret avoids the random-secret warning (and upload-state surprises).
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-secret"},
    }
    if delete:
        config["storage"]["delete"] = {"enabled": True}
    if auth:
        config["auth"] = auth
    return config


@contextmanager
def run_registry(
    workdir: Path, *, delete: bool = True, auth: dict[str, Any] | None = None
) -> Iterator[RunningRegistry]:
    """Start docker-registry with a config of ours; stop it when the block ends."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(SKIP_REASON)
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # the free port can be taken between our probe and the registry's bind
        port = _free_port()
        cfg = workdir / "config.yml"
        # JSON is YAML: no YAML writer needed for the registry's config.
        cfg.write_text(json.dumps(_config(workdir, port, delete=delete, auth=auth)))
        log = workdir / "registry.log"
        with log.open("wb") as out:
            process = subprocess.Popen([REGISTRY_BINARY, "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
        try:
            if _wait_until_up(process, f"http://127.0.0.1:{port}/v2/"):
                yield RunningRegistry(host=f"127.0.0.1:{port}", url=f"http://127.0.0.1:{port}", root=workdir, log=log)
                return
        finally:
            process.kill()
            process.wait(timeout=10)
    raise RuntimeError(f"docker-registry did not start; its log says:\n{log.read_text()[-2000:]}")


def _wait_until_up(process: subprocess.Popen[bytes], url: str) -> bool:
    """Poll ``GET /v2/`` until the registry answers (any status); False if it died."""
    deadline = time.monotonic() + _START_DEADLINE_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                client.get(url)
                return True
            except httpx.TransportError:
                time.sleep(0.01)
    raise RuntimeError(f"docker-registry at {url} did not answer within {_START_DEADLINE_S}s")


# ---- token auth ------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenServer:
    """A Docker token service: checks Basic credentials, grants only allowed actions.

    ``users`` maps a user name to (password, actions allowed on every repository).
    ``requests`` records (user, service, scopes) of every token request, in order.
    ``expired_tokens`` makes the next N tokens already expired, though they claim
    a long ``expires_in``: the registry then answers 401 invalid_token.
    """

    users: dict[str, tuple[str, frozenset[str]]]
    service: str = "test-registry"
    issuer: str = "test-issuer"
    expires_in: int = 300
    expired_tokens: int = 0
    url: str = ""
    requests: list[tuple[str, str, list[str]]] = field(default_factory=list)
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-token-server")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        """The certificate the registry trusts (its ``rootcertbundle``)."""
        assert self.cert is not None
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def mint(self, subject: str, access: list[dict[str, Any]]) -> str:
        """An ES256 JWT the registry accepts, carrying ``access``."""
        assert self.cert is not None
        now = int(time.time())
        expired = self.expired_tokens > 0
        self.expired_tokens -= 1 if expired else 0
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode("ascii")],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            # The registry allows some clock skew, so "expired" must be well in the past.
            "exp": now - 3600 if expired else now + self.expires_in,
            "nbf": now - 7200 if expired else now - 10,
            "iat": now - 7200 if expired else now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw r||s pair, not the DER structure cryptography returns.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def app(self) -> Starlette:
        """The ``GET /token`` endpoint."""

        async def token(request: Request) -> Response:
            user = ""
            header = request.headers.get("authorization", "")
            if header.lower().startswith("basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if user not in self.users or self.users[user][0] != password:
                    return JSONResponse(
                        {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                        status_code=401,
                    )
            scopes = request.query_params.getlist("scope")
            self.requests.append((user, request.query_params.get("service", ""), scopes))
            allowed = self.users[user][1] if user else frozenset()
            access = []
            for scope in " ".join(scopes).split():
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                granted = [a for a in actions.split(",") if a in allowed]
                if kind == "repository" and granted:
                    access.append({"type": kind, "name": name, "actions": granted})
            value = self.mint(user or "anonymous", access)
            return JSONResponse({"token": value, "access_token": value, "expires_in": self.expires_in})

        return Starlette(routes=[Route("/token", token)])


@dataclass(frozen=True)
class TokenAuthRegistry:
    """A registry that wants Bearer tokens from ``tokens``."""

    registry: RunningRegistry
    tokens: TokenServer

    @property
    def host(self) -> str:
        """The registry host for RegistryClient."""
        return self.registry.host


# ---- fault injection -------------------------------------------------------------------


@dataclass
class Fault:
    """An answer the proxy gives instead of forwarding, ``times`` times."""

    status: int
    headers: dict[str, str]
    times: int
    methods: frozenset[str]


@dataclass
class FaultProxy:
    """Forwards to a real registry, changing only what a test asks for.

    ``fail`` answers matching requests with an error status; ``paginate_tags``
    serves the tag list ``n`` at a time with a ``Link`` header (relative, as
    distribution 3 sends it, or absolute), which 2.8.2 itself never does;
    ``tamper_manifests`` changes manifest bytes but keeps the digest header, or
    with ``rehash`` sends the header of the altered bytes (a consistent liar);
    ``strip_digest`` drops ``Docker-Content-Digest`` like an old registry.
    """

    upstream: str
    url: str = ""
    faults: list[Fault] = field(default_factory=list)
    paginate_tags: int = 0
    absolute_links: bool = False
    tamper_manifests: bool = False
    rehash: bool = False
    strip_digest: bool = False
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    @property
    def host(self) -> str:
        """The proxy's host for RegistryClient."""
        return self.url.removeprefix("http://")

    def fail(
        self, status: int, *, times: int = 1, headers: dict[str, str] | None = None, methods: str = "GET HEAD"
    ) -> None:
        """Answer the next ``times`` requests whose method is in ``methods`` with ``status``."""
        self.faults.append(Fault(status, headers or {}, times, frozenset(methods.split())))

    def app(self) -> Starlette:
        """The forwarding ASGI app; serve it with ``serve_asgi(..., lifespan=True)``."""
        methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            # One client for the proxy's life: building one per request costs ~50 ms.
            async with httpx.AsyncClient(timeout=10) as client:
                self._client = client
                yield

        return Starlette(routes=[Route("/{path:path}", self._forward, methods=methods)], lifespan=lifespan)

    async def _forward(self, request: Request) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        for fault in self.faults:
            if fault.times > 0 and request.method in fault.methods:
                fault.times -= 1
                self.seen.append((request.method, path, fault.status))
                code = "TOOMANYREQUESTS" if fault.status == 429 else "UNAVAILABLE"
                errors = {"errors": [{"code": code, "message": "injected by the test"}]}
                return JSONResponse(errors, status_code=fault.status, headers=fault.headers)
        headers = {k: v for k, v in request.headers.items() if k not in {"accept-encoding", "content-length"}}
        # When paginating, fetch the whole list (2.8.2 ignores n and last anyway).
        paged = bool(self.paginate_tags) and request.url.path.endswith("/tags/list")
        assert self._client is not None, "serve FaultProxy.app() with lifespan=True"
        upstream = await self._client.request(
            request.method,
            self.upstream + (request.url.path if paged else path),
            headers={**headers, "accept-encoding": "identity"},
            content=await request.body(),
        )
        self.seen.append((request.method, path, upstream.status_code))
        hop_by_hop = {"connection", "transfer-encoding", "keep-alive", "content-encoding"}
        out = {k: v for k, v in upstream.headers.items() if k not in hop_by_hop}
        body = upstream.content
        if self.strip_digest:
            out.pop("docker-content-digest", None)
        if self.tamper_manifests and "/manifests/" in path and request.method == "GET":
            body = body.replace(b"schemaVersion", b"schemaVersion ", 1)
            out["content-length"] = str(len(body))
            if self.rehash:
                out["docker-content-digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
        if paged and upstream.status_code == 200:
            return self._tag_page(request, upstream.json())
        return Response(body, status_code=upstream.status_code, headers=out)

    def _tag_page(self, request: Request, listing: dict[str, Any]) -> Response:
        """One page of the spec's tag pagination: ``n`` tags after ``last``, lexically."""
        tags = sorted(listing.get("tags") or [])
        n = int(request.query_params.get("n") or self.paginate_tags)
        n = min(n, self.paginate_tags)
        after = request.query_params.get("last", "")
        page = [tag for tag in tags if tag > after][:n]
        headers = {}
        if page and page[-1] != tags[-1]:
            link = f"{request.url.path}?n={n}&last={page[-1]}"
            if self.absolute_links:
                link = f"{self.url}{link}"
            headers["link"] = f'<{link}>; rel="next"'
        return JSONResponse({"name": listing.get("name"), "tags": page}, headers=headers)


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh registry without auth, deletes enabled."""
    with run_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture
def registry_without_delete(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry whose storage refuses deletes (405 UNSUPPORTED), as GHCR's registry API does."""
    with run_registry(tmp_path / "registry-no-delete", delete=False) as running:
        yield running


BASIC_USER = "ci"
BASIC_PASSWORD = "basic-password-Hk2pQ"


@pytest.fixture
def registry_with_basic_auth(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry behind htpasswd Basic auth for ``BASIC_USER``/``BASIC_PASSWORD``."""
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt hashes the htpasswd file: pip install bcrypt")
    workdir = tmp_path / "registry-basic"
    workdir.mkdir()
    hashed = bcrypt.hashpw(BASIC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (workdir / "htpasswd").write_text(f"{BASIC_USER}:{hashed}\n")
    auth = {"htpasswd": {"realm": "basic-realm", "path": str(workdir / "htpasswd")}}
    with run_registry(workdir, auth=auth) as running:
        yield running


TOKEN_USER = "pusher"
TOKEN_PASSWORD = "token-password-9xVb"
READER_USER = "reader"
READER_PASSWORD = "reader-password-3Jq"


@pytest.fixture
def registry_with_token_auth(tmp_path: Path) -> Iterator[TokenAuthRegistry]:
    """A registry that wants Bearer tokens; ``pusher`` may pull/push/delete, ``reader`` only pull."""
    if shutil.which(REGISTRY_BINARY) is None:
        pytest.skip(SKIP_REASON)
    tokens = TokenServer(
        users={
            TOKEN_USER: (TOKEN_PASSWORD, frozenset({"pull", "push", "delete"})),
            READER_USER: (READER_PASSWORD, frozenset({"pull"})),
        }
    )
    workdir = tmp_path / "registry-token"
    workdir.mkdir()
    (workdir / "token.crt").write_bytes(tokens.cert_pem())
    with serve_asgi(tokens.app()) as token_url:
        tokens.url = token_url
        auth = {
            "token": {
                "realm": f"{token_url}/token",
                "service": tokens.service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(workdir / "token.crt"),
            }
        }
        with run_registry(workdir, auth=auth) as running:
            yield TokenAuthRegistry(registry=running, tokens=tokens)


@pytest.fixture
def fault_proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    """A proxy in front of ``registry`` that can answer chosen requests with 429/5xx."""
    proxy = FaultProxy(upstream=registry.url)
    with serve_asgi(proxy.app(), lifespan=True) as url:
        proxy.url = url
        yield proxy
