"""Serve an ASGI app with uvicorn on a free loopback port, for tests and benches.

Test doubles are real HTTP servers so that clients go through their whole stack
(connection pool, timeouts, content types, dropped connections), not a mock
transport. Two shapes:

    async with serve_asgi(app) as base_url:       # a task on the current event loop
        ...
    with serve_asgi_in_thread(app) as base_url:   # its own loop in a thread, for sync code
        ...

The socket is bound before uvicorn starts (port 0, so the OS picks a free port)
and only 127.0.0.1 is ever used. Startup is awaited through an event, never a
sleep; shutdown stops uvicorn's main loop at once instead of at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

HOST = "127.0.0.1"


class _Server(uvicorn.Server):
    """uvicorn without signal handlers, with a startup event and an event-driven main loop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready: asyncio.Event | None = None
        self.stop: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test runner owns SIGINT/SIGTERM; a server inside it must not swallow them.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        assert self.ready is not None
        self.ready.set()

    async def main_loop(self) -> None:
        assert self.stop is not None
        await self.stop.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own shutdown always pauses 100 ms and then polls every 100 ms; tests
        # start and stop servers constantly, so wait (bounded) just until connections close.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while self.server_state.connections or self.server_state.tasks:
                    await asyncio.sleep(0.001)
        for task in self.server_state.tasks:
            task.cancel()
        await self.lifespan.shutdown()

    async def run_on(self, sock: socket.socket) -> None:
        """Serve on ``sock`` until ``stop`` is set."""
        await self.serve(sockets=[sock])


def _bind() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


def _config(app: Any, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="auto",
        http="h11",
        ws="none",
        timeout_graceful_shutdown=2,
    )


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, log_level: str = "warning") -> AsyncIterator[str]:
    """Run ``app`` on the current asyncio loop; yield ``http://127.0.0.1:<port>``."""
    sock = _bind()
    server = _Server(_config(app, log_level))
    server.ready, server.stop = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(server.run_on(sock))
    ready = asyncio.ensure_future(server.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            raise RuntimeError("the ASGI app stopped during startup")
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        ready.cancel()
        server.should_exit = True
        server.stop.set()
        await task
        sock.close()


@contextlib.contextmanager
def serve_asgi_in_thread(app: Any, *, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` on its own loop in a daemon thread; yield ``http://127.0.0.1:<port>``."""
    sock = _bind()
    server = _Server(_config(app, log_level))
    started = threading.Event()
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    async def main() -> None:
        server.ready, server.stop = asyncio.Event(), asyncio.Event()
        watcher = asyncio.ensure_future(server.ready.wait())
        watcher.add_done_callback(lambda _: started.set())
        try:
            await server.run_on(sock)
        except BaseException as e:  # reported to the caller's thread below
            failure.append(e)
        finally:
            watcher.cancel()
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()
    try:
        if failure or not thread.is_alive():
            raise RuntimeError(f"the ASGI app stopped during startup: {failure[:1]}")
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:

        def stop() -> None:
            server.should_exit = True
            if server.stop is not None:
                server.stop.set()

        if thread.is_alive():
            loop.call_soon_threadsafe(stop)
        thread.join()
        loop.close()
        sock.close()
