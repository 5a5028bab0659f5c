"""A real Slack-style incoming webhook on 127.0.0.1, for notification tests.

It records every request and answers the way the test asks: 200 ``ok`` like Slack,
500 like a broken relay, 404 repeating the URL (``echo``), or nothing at all
(``hang``) until the test ends, so a client timeout happens for real. It runs uvicorn in a thread on a socket bound
before the thread starts, so it accepts connections at once: no start-up wait.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

Mode = Literal["ok", "error", "echo", "hang"]


@dataclass
class WebhookReceiver:
    """The running receiver: its URL, what it received, and how it answers next."""

    url: str
    mode: Mode = "ok"
    bodies: list[bytes] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def payloads(self) -> list[Any]:
        """The JSON bodies received, in order."""
        return [json.loads(body) for body in self.bodies]


def _app(receiver: WebhookReceiver) -> Starlette:
    async def hook(request: Request) -> Response:
        receiver.bodies.append(await request.body())
        if receiver.mode == "hang":
            # Blocks until the fixture ends, well past any client timeout.
            await anyio.to_thread.run_sync(receiver.released.wait)
        if receiver.mode == "error":
            return PlainTextResponse("no_service", status_code=500)
        if receiver.mode == "echo":
            # Some relays repeat the URL they were called on; warnings must still hide it.
            return PlainTextResponse(f"no hook at {request.url.path} ({request.url})", status_code=404)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/services/T000/B000/{token}", hook, methods=["POST"])])


@contextmanager
def serve_webhook() -> Iterator[WebhookReceiver]:
    """Run a receiver on a free loopback port for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    # The path looks like Slack's, whose last part is the secret token.
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-hook-token")
    config = uvicorn.Config(_app(receiver), log_level="warning", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
