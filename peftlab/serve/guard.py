"""The door of `peftlab serve`: head size, API key, body size and body arrival time, checked in plain ASGI before any route runs.

Plain ASGI rather than FastAPI middleware, because a request must be refused before the app reads a
byte of its body: a client without the key may declare a 1 GB body and is answered at once, and
the connection is closed so that the unread body is never taken for the next request.

The head is measured here too: h11's max_incomplete_event_size only applies while a head is
incomplete (h11/_connection.py, `if event is NEED_DATA: if len(self._receive_buffer) > ...`), so
a larger head arriving in one read (asyncio reads up to 256 KiB) passes it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Awaitable, Callable

from peftlab.serve.limits import Limits
from peftlab.serve.openai_api import ApiError

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def key_matches(authorization: bytes, key: bytes) -> bool:
    """'Bearer KEY', compared in constant time: the answer's timing tells nothing of how much of the key was right."""
    scheme, _, token = authorization.partition(b" ")
    return hmac.compare_digest(token.strip(), key) and scheme.lower() == b"bearer"


async def send_error(send: Send, error: ApiError, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(error.payload())).encode())]
    if close:  # uvicorn closes the connection after a response that says so
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": error.payload(), "more_body": False})


async def read_body(receive: Receive, max_bytes: int, timeout_seconds: float) -> bytes | None:
    """The whole body, counted as it arrives (chunked bodies declare no length); None if the client left."""
    chunks: list[bytes] = []
    size, deadline = 0, time.monotonic() + timeout_seconds
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {timeout_seconds:g} s (--body-timeout)", None,
                           "request_timeout") from None
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
        if size > max_bytes:
            raise _too_large(f"more than {max_bytes}", max_bytes)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(size: str, max_bytes: int) -> ApiError:
    return ApiError(413, f"request body of {size} bytes exceeds the limit of {max_bytes} bytes (--max-body-bytes)", None,
                    "request_too_large")


class Guard:
    """Wraps the app: refuses a request without the key or with too large a body, hands the app the body read in full.

    It also stands outside Starlette's error middleware, which answers a bug with a 500 and then
    re-raises it: the 500 is out and logged, so the re-raised error stops here.
    """

    def __init__(self, app: Any, api_key: str | None, limits: Limits):
        self.app = app
        self.key = None if api_key is None else api_key.encode()
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            head_bytes = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + sum(
                len(name) + len(value) + 4 for name, value in scope["headers"])
            if head_bytes > self.limits.max_header_bytes:
                raise ApiError(431, f"request headers of {head_bytes} bytes exceed the limit of {self.limits.max_header_bytes} bytes "
                               "(--max-header-bytes)", None, "request_header_fields_too_large")
            if self.key is not None and not key_matches(headers.get(b"authorization", b""), self.key):
                raise ApiError(401, "Incorrect API key provided; send it as 'Authorization: Bearer KEY'", None, "invalid_api_key")
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limits.max_body_bytes:
                raise _too_large(str(int(length)), self.limits.max_body_bytes)
            body = await read_body(receive, self.limits.max_body_bytes, self.limits.body_timeout_seconds)
        except ApiError as error:
            await send_error(send, error, close=True)  # the body's rest is unread: this connection carries nothing more
            return
        if body is None:
            return
        started = False

        async def sent(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), sent)
        except Exception:
            if not started:
                raise
            log.debug("error after the answer was sent", exc_info=True)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the body once, then waits on the client (for its disconnect)."""
    given = False

    async def receive_again() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again
