"""The HTTP side of `peftlab serve`: routes, API key, body limits, JSON answers and server-sent events.

Built on the standard library's ThreadingHTTPServer: a thread per connection only waits on its
request's events, the scheduler thread does all model work, and nothing beyond Python is needed.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from peftlab.serve.scheduler import Busy, Scheduler
from peftlab.serve.openai_api import ApiError, make_jobs, models_list, parse_request, response, stream_chunks, wait_all

log = logging.getLogger(__name__)
ROUTES = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # the most tokens one completion may ask for
    wait_seconds: float = 600.0  # longest silence from the scheduler before a request gives up


class PeftlabServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the listen backlog: many clients connect at once (the default 5 resets them)

    def __init__(self, address: tuple[str, int], engine: Any, scheduler: Scheduler, api_key: str | None, limits: Limits):
        super().__init__(address, Handler)
        self.engine, self.scheduler, self.api_key, self.limits = engine, scheduler, api_key, limits
        self.started = int(time.time())

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client closed its keep-alive connection: nothing to report
        log.exception("unexpected error serving %s", client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams use chunked transfer encoding
    server: PeftlabServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _handle(self, route: Any) -> None:
        try:
            self._check_key()
            route()
        except ApiError as error:
            self._send_json(error.status, error.body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # a bug, not the client's fault: say so, keep serving
            log.exception("request failed")
            self.close_connection = True
            self._send_json(500, ApiError(500, f"internal error: {type(error).__name__}", None, "internal_error", "server_error").body())

    def _check_key(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            self._discard_body()
            raise ApiError(401, "Incorrect API key provided; send it as 'Authorization: Bearer KEY'", None, "invalid_api_key")

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send_json(200, models_list(self.server.engine, self.server.started))
        elif path in ROUTES:
            raise ApiError(405, f"{path} takes POST", None, "method_not_allowed")
        else:
            raise ApiError(404, f"no route {path}; try /v1/models, /v1/completions, /v1/chat/completions or /health", None, "not_found")

    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ROUTES:
            self._discard_body()
            raise ApiError(404 if path not in ("/v1/models", "/health") else 405, f"no POST route {path}", None, "not_found")
        body = self._read_json()
        request = parse_request(ROUTES[path], body, self.server.engine, self.server.limits.max_tokens)
        jobs, events = make_jobs(request, self.server.engine.loaded.tokenizer)
        try:
            self.server.scheduler.submit(jobs)
        except Busy as busy:
            raise ApiError(429, f"server busy: {busy}; retry shortly", None, "rate_limit_exceeded", "rate_limit_error") from None
        try:
            answer = wait_all(jobs, events, self.server.limits.wait_seconds)
            if request.stream:
                self._send_stream(stream_chunks(request, answer))
            else:
                self._send_json(200, response(request, answer))
        finally:
            for job in jobs:
                job.cancelled = True  # finished jobs ignore it; a departed client's jobs stop at the next step

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise ApiError(411 if length is None else 400, "send the JSON body with a Content-Length header", None, "length_required")
        if int(length) > self.server.limits.max_body_bytes:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise ApiError(413, f"request body of {int(length)} bytes exceeds the limit of {self.server.limits.max_body_bytes} bytes "
                           "(--max-body-bytes)", None, "request_too_large")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ApiError(400, f"We could not parse the JSON body of your request ({error}); send a JSON object", None,
                           "invalid_json") from None

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.server.limits.max_body_bytes:
            self.rfile.read(int(length))
        elif length:
            self.close_connection = True

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, chunks: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        except ApiError as error:  # headers are out: the error travels as the last event
            self._write_chunk(f"data: {json.dumps(error.body())}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def start(engine: Any, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, limits: Limits | None = None,
          max_batch_size: int = 32, window_seconds: float = 0.01) -> tuple[PeftlabServer, threading.Thread]:
    """Start scheduler and server in background threads; returns the server (server_address has the port)."""
    scheduler = Scheduler(engine, max_batch_size, window_seconds)
    try:
        server = PeftlabServer((host, port), engine, scheduler, api_key, limits or Limits())
    except OSError:
        scheduler.close()
        raise
    thread = threading.Thread(target=server.serve_forever, name="peftlab-http", daemon=True)
    thread.start()
    return server, thread


def stop(server: PeftlabServer) -> None:
    server.shutdown()
    server.server_close()
    server.scheduler.close()
