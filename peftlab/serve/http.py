"""The HTTP server of `peftlab serve`: uvicorn in-process, one event loop thread for every connection.

Connections cost no thread: a request's handler awaits its jobs' events, which the scheduler
thread hands to the loop. uvicorn's settings close the doors a public server must close: no
`Server:` header, a cap on open connections (503), a cap on the request head, and a deadline for
connections that send no request (IdleTimeoutProtocol, below).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from peftlab.serve.app import build_app
from peftlab.serve.guard import Guard
from peftlab.serve.limits import Limits
from peftlab.serve.scheduler import Scheduler

GRACE_SECONDS = 5  # on stop, requests still running get this long before they are cancelled
START_SECONDS = 30


class IdleTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head, counted from the connection or the last answer.

    uvicorn 0.54 arms its keep-alive timer only after a response (H11Protocol.on_response_complete)
    and cancels it on any byte received (data_received): a connection that never sends a request,
    or sends a header byte now and then, is held for ever and counts against limit_concurrency.
    Here a timer is armed when a connection opens and after every answer, is not reset by bytes,
    and closes the connection if no complete request head has arrived when it fires.
    """

    _head_deadline: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # no request in progress: still waiting for a head
        if waiting and not self.transport.is_closing():
            self.transport.close()


@dataclass
class Server:
    """A running server: its port, the engine and scheduler behind it, and what `stop` needs."""

    port: int
    engine: Any
    scheduler: Scheduler
    uvicorn: uvicorn.Server
    thread: threading.Thread


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound here, not by uvicorn: a taken port is an OSError for the caller (uvicorn would exit the process)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # many clients connect at once: a short backlog resets them
    except OSError:
        sock.close()
        raise
    return sock


def start(engine: Any, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, limits: Limits | None = None,
          scheduler: Any = None, max_batch_size: int = 32, prefill_chunk_tokens: int = 256, adapter_dir: str | None = None,
          max_adapters: int | None = None) -> Server:
    """Start the scheduler (or serve through the one given) and the HTTP server in background threads;
    returns once the server accepts requests."""
    limits = limits or Limits()
    if scheduler is None:
        scheduler = Scheduler(engine, max_batch_size=max_batch_size, max_waiting=limits.max_waiting,
                              prefill_chunk_tokens=prefill_chunk_tokens, adapter_dir=adapter_dir, max_adapters=max_adapters)
    try:
        sock = listening_socket(host, port)
    except OSError:
        scheduler.close()
        raise
    config = uvicorn.Config(
        Guard(build_app(engine, scheduler, limits), api_key, limits), http=IdleTimeoutProtocol, loop="asyncio", lifespan="off",
        ws="none", proxy_headers=False, server_header=False, timeout_keep_alive=limits.idle_timeout_seconds,  # type: ignore[arg-type]
        limit_concurrency=limits.max_connections, h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=GRACE_SECONDS, log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="peftlab-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            scheduler.close()
            sock.close()
            raise RuntimeError("the HTTP server did not start; its error is logged above")
        time.sleep(0.01)
    return Server(sock.getsockname()[1], engine, scheduler, server, thread)


def stop(server: Server) -> None:
    """Stop taking requests, give running ones GRACE_SECONDS, then stop the scheduler."""
    server.uvicorn.should_exit = True
    server.thread.join(timeout=GRACE_SECONDS + 10)
    server.scheduler.close()
