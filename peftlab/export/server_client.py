"""`peftlab check --server`'s HTTP client: one JSON answer from a server we do not trust, bounded in time, size and reach.

Hand-written on the standard library's http.client because urllib's bounds fall short: its
timeout is per socket read (a server sending one byte every 2 s holds it for ever), it follows a
redirect to any host with the Authorization header still attached, and `read()` takes a body of
any size into memory.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from peftlab.errors import PeftlabError

ANSWER_SECONDS = 600.0  # the whole exchange, connect to last byte: a CPU server generating 256 tokens takes minutes
MAX_ANSWER_BYTES = 8 << 20  # a completion or a model list is kilobytes; more is not an answer to read
MAX_REDIRECTS = 5
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Bounds:
    seconds: float = ANSWER_SECONDS
    max_bytes: int = MAX_ANSWER_BYTES


class HttpAnswerError(Exception):
    """The server answered with an error status; `detail` is its message (OpenAI's error.message when it sent one)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def request_json(url: str, body: dict[str, Any] | None, headers: dict[str, str], bounds: Bounds | None = None) -> Any:
    """POST `body` (GET when None) and return the JSON answer. PeftlabError for a redirect off the origin, a deadline
    passed, a body over the cap, or an answer that is not JSON; HttpAnswerError for an error status; OSError when
    the server cannot be reached."""
    bounds = bounds or Bounds()
    deadline = time.monotonic() + bounds.seconds
    start = origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        status, location, raw = _exchange(url, body, headers, deadline, bounds)
        if location is None:
            break
        target = urljoin(url, location)
        if origin(target) != start:  # the API key would go with it: never to another host, port or scheme
            raise PeftlabError(f"{url} redirects to {target}, another origin; not followed (the API key would go there): "
                               "pass the server's own URL as --server")
        url = target
    else:
        raise PeftlabError(f"{url}: more than {MAX_REDIRECTS} redirects; pass the server's final URL as --server")
    if status >= 400:
        text = raw.decode(errors="replace")[:300]
        try:
            text = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise HttpAnswerError(status, str(text))
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise PeftlabError(f"{url} answered {len(raw)} bytes that are not JSON (starting {raw[:60]!r}); "
                           "is --server an OpenAI-compatible API?") from None


def _exchange(url: str, body: dict[str, Any] | None, headers: dict[str, str], deadline: float,
              bounds: Bounds) -> tuple[int, str | None, bytes]:
    """One request: (status, the redirect's Location or None, the body). A watchdog shuts the socket at the deadline,
    which ends a read however slowly the bytes trickle."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise PeftlabError(f"{url}: only http:// and https:// servers can be checked")
    remaining = deadline - time.monotonic()
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=max(remaining, 0.001))
    timed_out = threading.Event()

    def shut() -> None:
        timed_out.set()
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(max(remaining, 0.0), shut)
    watchdog.daemon = True
    watchdog.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        data = json.dumps(body).encode() if body is not None else None
        connection.request("POST" if data is not None else "GET", path, data, headers)
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            return response.status, response.getheader("Location"), b""
        raw = _bounded_body(url, response, bounds.max_bytes)
        if timed_out.is_set():  # the shut socket ended the body early: what was read is not the answer
            raise OSError("deadline")
        return response.status, None, raw
    except (OSError, http.client.HTTPException):
        if timed_out.is_set():
            raise PeftlabError(f"{url} did not answer in full within {bounds.seconds:.0f} s; is the server overloaded?") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()


def _bounded_body(url: str, response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PeftlabError(f"{url} announced a {int(declared)}-byte answer, over the {max_bytes}-byte cap; not read")
    chunks, size = [], 0
    while chunk := response.read1(READ_BYTES):  # what has arrived, without waiting to fill READ_BYTES
        size += len(chunk)
        if size > max_bytes:
            raise PeftlabError(f"{url} sent an answer over the {max_bytes}-byte cap; stopped reading")
        chunks.append(chunk)
    return b"".join(chunks)
