"""`peftlab check --server` against a hostile server on a real loopback socket: a trickle meets a total deadline, a
redirect to another origin is not followed (the API key stays home), a huge answer is cut at the cap, a malformed
answer is exit 2 in one line (exit 1 stays for a check that ran and failed)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.export.parity import Server, served_model
from peftlab.export.server_client import Bounds
from tests.conftest import TOY_ROWS, write_jsonl

MODELS = json.dumps({"object": "list", "data": [{"id": "mine", "parent": "tiny"}]}).encode()


class Hostile(BaseHTTPRequestHandler):
    """Answers /v1/models as the path's first part says: /trickle, /redirect-to/PORT, /same-origin, /huge, /declared-huge, /not-json."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]] = []  # (path, Authorization) of every request, any server

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        Hostile.seen.append((self.path, self.headers.get("Authorization")))
        kind = self.path.strip("/").split("/")[0]
        try:
            getattr(self, "answer_" + kind.replace("-", "_"))()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what the bounds are for
            pass

    def head(self, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def answer_trickle(self):
        self.head(**{"Content_Length": str(len(MODELS))})
        for byte in MODELS[:40]:  # one byte every 0.5 s: each read gets something, so a per-read timeout never fires
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.5)

    def answer_redirect_to(self):
        port = self.path.strip("/").split("/")[1]
        self.head(302, Location=f"http://127.0.0.1:{port}/ok/v1/models", Content_Length="0")

    def answer_same_origin(self):
        self.head(307, Location="/ok/v1/models", Content_Length="0")

    def answer_ok(self):
        self.head(**{"Content_Length": str(len(MODELS)), "Content_Type": "application/json"})
        self.wfile.write(MODELS)

    def answer_huge(self):  # 60 MB, no length announced: only the client's cap stops it
        self.head(Connection="close")
        block = b" " * (1 << 20)
        for _ in range(60):
            self.wfile.write(block)

    def answer_declared_huge(self):
        self.head(Content_Length=str(60 << 20))
        self.wfile.write(b" " * (1 << 20))

    def answer_not_json(self):
        body = b"<html>hello</html>"
        self.head(Content_Length=str(len(body)))
        self.wfile.write(body)

    def answer_wrong_shape(self):
        body = b'{"data": 5}'
        self.head(Content_Length=str(len(body)))
        self.wfile.write(body)


@pytest.fixture
def hostile():
    """Two hostile servers on loopback (two origins); yields their ports."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Hostile) for _ in range(2)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    Hostile.seen.clear()
    yield [server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def ask(port: int, path: str, **bounds) -> str:
    return served_model(Server(f"http://127.0.0.1:{port}/{path}", None, "secret-key", Bounds(**bounds)))


def test_a_trickling_server_meets_a_total_deadline(hostile):
    started = time.monotonic()
    with pytest.raises(PeftlabError, match="did not answer in full within 2 s"):
        ask(hostile[0], "trickle", seconds=2)
    assert time.monotonic() - started < 10  # 40 bytes at 0.5 s each would take 20 s


def test_a_redirect_to_another_origin_is_not_followed_and_the_key_stays_home(hostile):
    with pytest.raises(PeftlabError, match="another origin; not followed"):
        ask(hostile[0], f"redirect-to/{hostile[1]}")
    assert [path for path, _ in Hostile.seen] == [f"/redirect-to/{hostile[1]}/v1/models"]  # the other server heard nothing


def test_a_redirect_on_the_same_origin_is_followed(hostile):
    assert ask(hostile[0], "same-origin") == "mine"
    assert Hostile.seen[-1] == ("/ok/v1/models", "Bearer secret-key")


def test_a_huge_answer_is_cut_at_the_cap(hostile):
    with pytest.raises(PeftlabError, match="over the 1048576-byte cap; stopped reading"):
        ask(hostile[0], "huge", max_bytes=1 << 20)
    with pytest.raises(PeftlabError, match="announced a 62914560-byte answer"):
        ask(hostile[0], "declared-huge")  # the default cap (8 MiB)


@pytest.mark.parametrize("path, message", [("not-json", "not JSON"), ("wrong-shape", "has no ['data'][0]")])
def test_a_malformed_answer_is_exit_2_in_one_line(adapter, hostile, tmp_path, capsys, path, message):
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS[:1])
    assert main(["check", adapter, "--data", str(data), "--server", f"http://127.0.0.1:{hostile[0]}/{path}"]) == 2
    error = capsys.readouterr().err
    assert message in error and "unexpected" not in error and len(error.strip().splitlines()) == 1, error
