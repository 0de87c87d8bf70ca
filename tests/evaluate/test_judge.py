"""The judge metrics against a fake OpenAI-compatible judge on loopback: both orders, the cache, and every failure as one line."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics import JudgeSettings, ScoringContext, resolve_metrics, score_all

PROMPTS = ["Summarize: A meets B.", "Summarize: C calls D."]
REFERENCES = [["A meets B."], ["C calls D."]]
TUNED = ["A meets B.", "C calls D."]
BASE = ["bla bla", "something else"]


class FakeJudge(BaseHTTPRequestHandler):
    """Answers chat completions by `server.mode`: fair (prefers the answer equal to the reference), biased (always A), ..."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.server.mode == "unauthorized":
            self.send_response(401)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        reply = self.server.reply(prompt)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        if self.server.mode == "malformed-json":
            payload = b"<html>not json"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def fair_reply(prompt: str) -> str:
    if "Answer A:" not in prompt:
        answer = prompt.split("Answer to grade:\n", 1)[1]
        return "Score: 10" if any(answer.startswith(t) for t in TUNED) else "Score: 1"
    first = prompt.split("Answer A:\n", 1)[1].split("\n", 1)[0]
    return "Verdict: A" if first in TUNED else "Verdict: B"


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.requests, server.mode, server.reply = [], "fair", fair_reply
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def judged(name: str, server, tmp_path, predictions=TUNED, base=BASE) -> list[dict[str, float]]:
    settings = JudgeSettings(f"http://127.0.0.1:{server.server_address[1]}/v1", "judge-model", cache_file=str(tmp_path / "cache.sqlite"))
    return score_all(resolve_metrics([name], settings), predictions, REFERENCES, ScoringContext(PROMPTS, base))


def test_rubric_scores_and_the_cache_pays_once(judge_server, tmp_path):
    assert judged("judge", judge_server, tmp_path) == [{"judge": 1.0}, {"judge": 1.0}]
    assert judged("judge", judge_server, tmp_path, predictions=BASE) == [{"judge": 0.0}, {"judge": 0.0}]
    asked = len(judge_server.requests)
    assert asked == 4 and all(r["model"] == "judge-model" and r["temperature"] == 0 for r in judge_server.requests)
    assert judged("judge", judge_server, tmp_path) == [{"judge": 1.0}, {"judge": 1.0}]
    assert len(judge_server.requests) == asked  # the second run was answered from the cache


def test_pairwise_asks_both_orders(judge_server, tmp_path):
    got = judged("judge-pairwise", judge_server, tmp_path)
    assert got == [{"judge_win": 1.0, "judge_agreement": 1.0}] * 2
    orders = [r["messages"][0]["content"] for r in judge_server.requests]
    assert len(orders) == 4 and sum("Answer A:\nA meets B." in o for o in orders) == 1 and sum("Answer B:\nA meets B." in o for o in orders) == 1
    assert judged("judge-pairwise", judge_server, tmp_path) == got and len(judge_server.requests) == 4  # cached


def test_a_position_biased_judge_cancels_out(judge_server, tmp_path):
    judge_server.reply = lambda prompt: "Verdict: A"
    assert judged("judge-pairwise", judge_server, tmp_path) == [{"judge_win": 0.5, "judge_agreement": 0.0}] * 2


def test_a_verdict_given_alone_counts(judge_server, tmp_path):
    """SmolLM2-135M-Instruct answers the default pairwise prompt with the letter alone ('A'), without 'Verdict:'."""
    judge_server.reply = lambda prompt: "A" if fair_reply(prompt) == "Verdict: A" else " B."
    assert judged("judge-pairwise", judge_server, tmp_path) == [{"judge_win": 1.0, "judge_agreement": 1.0}] * 2


def test_ties_count_half(judge_server, tmp_path):
    judge_server.reply = lambda prompt: "Verdict: tie"
    assert judged("judge-pairwise", judge_server, tmp_path) == [{"judge_win": 0.5, "judge_agreement": 1.0}] * 2


def test_the_base_against_itself_is_a_tie_without_asking(judge_server, tmp_path):
    settings = JudgeSettings(f"http://127.0.0.1:{judge_server.server_address[1]}/v1", "m", cache_file=str(tmp_path / "c.sqlite"))
    got = score_all(resolve_metrics(["judge-pairwise"], settings), BASE, REFERENCES, ScoringContext(PROMPTS, BASE))
    assert got == [{"judge_win": 0.5, "judge_agreement": 1.0}] * 2 and not judge_server.requests


@pytest.mark.parametrize(("mode", "reply", "message"), [
    ("unauthorized", None, "refused the key"),
    ("malformed-json", None, "not an OpenAI chat completion"),
    ("fair", "I like the second one better", "no 'Verdict: A', 'B' or 'tie'"),
    ("fair", "A or B", "no 'Verdict: A', 'B' or 'tie'"),
])
def test_a_judge_failure_is_one_line_and_scores_nothing(judge_server, tmp_path, mode, reply, message):
    judge_server.mode = mode
    if reply:
        judge_server.reply = lambda prompt: reply
    with pytest.raises(PeftlabError, match=message):
        judged("judge-pairwise", judge_server, tmp_path)


def test_an_unreachable_judge_is_one_line(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = JudgeSettings(f"http://127.0.0.1:{port}/v1", "m", cache_file=str(tmp_path / "c.sqlite"))
    with pytest.raises(PeftlabError, match="unreachable"):
        score_all(resolve_metrics(["judge"], settings), TUNED, REFERENCES, ScoringContext(PROMPTS))


def test_a_judge_needs_its_url_and_model():
    with pytest.raises(PeftlabError, match="--judge-url"):
        resolve_metrics(["judge"], JudgeSettings())
