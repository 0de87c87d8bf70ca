"""`--metric judge` and `--metric judge-pairwise`: a model behind an OpenAI-compatible endpoint grades the answers.

- judge: a rubric score per answer, 1 to 10, as (score - 1) / 9.
- judge-pairwise: each answer against the base model's answer for the same row, asked in both
  orders (the answer first, then second) to cancel the judge's position bias; a win counts 1, a
  tie 0.5, a loss 0, and the example's score is the mean of the two orders. `judge_agreement`
  is 1 where both orders gave the same verdict. The base model's own answers tie with
  themselves by definition (0.5) and are not sent.
Every verdict is cached by (judge URL, judge model, the whole judge prompt), which holds the
prompt, the reference and the answer(s): a repeated or resumed run never asks twice. The judge
is asked greedily (temperature 0). The default prompts are in judge_prompts/; `--judge-prompt
FILE` replaces the one of the chosen mode (fields: {prompt}, {reference}, {answer}; pairwise:
{answer_a}, {answer_b}).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics.base import Metric, ScoringContext

PROMPTS = Path(__file__).with_name("judge_prompts")
KEY_VARIABLES = ("PEFTLAB_JUDGE_KEY", "OPENAI_API_KEY")  # the key is read from the first that is set
TIMEOUT_SECONDS = 120
MAX_ANSWER_BYTES = 1 << 20
_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_VERDICT = re.compile(r"verdict\s*[:=]\s*\[?\s*(A|B|tie)\b", re.IGNORECASE)
# a reply that is the verdict alone ("A", "B.", "**tie**"): what small judges (SmolLM2-135M-Instruct, observed) answer
_BARE_VERDICT = re.compile(r"^\W*(A|B|tie)\W*$", re.IGNORECASE)


@dataclass
class JudgeSettings:
    url: str | None = None  # the endpoint's base, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the `model` the endpoint serves
    prompt_file: str | None = None  # replaces the mode's default prompt
    cache_file: str | None = None  # default: $PEFTLAB_CACHE/judge.sqlite (see peftlab.models.gguf_cache.cache_root)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the key must never follow a redirect to another host
        return None


class Judge:
    """One judge endpoint with its verdict cache."""

    def __init__(self, settings: JudgeSettings):
        if not settings.url or not settings.model:
            raise PeftlabError("--metric judge needs --judge-url URL (an OpenAI-compatible endpoint, e.g. "
                               "http://127.0.0.1:8000/v1 of `peftlab serve`) and --judge-model NAME")
        self.url = settings.url.rstrip("/") + "/chat/completions"
        self.model = settings.model
        self.key = next((os.environ[name] for name in KEY_VARIABLES if os.environ.get(name)), None)
        self.cache_path = Path(settings.cache_file) if settings.cache_file else _default_cache()
        self.asked = self.cached = 0
        self.prompt_file = settings.prompt_file

    def template(self, mode: str) -> str:
        path = Path(self.prompt_file) if self.prompt_file else PROMPTS / f"{mode}.txt"
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PeftlabError(f"--judge-prompt {path}: cannot read it ({error}); give a UTF-8 text file") from None

    def verdict(self, prompt: str) -> str:
        """The judge's reply to `prompt`, from the cache when this judge was asked it before."""
        key = hashlib.sha256("\0".join((self.url, self.model, prompt)).encode()).hexdigest()
        with self._cache() as cache:
            row = cache.execute("SELECT reply FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row:
            self.cached += 1
            return row[0]
        reply = self._ask(prompt)
        with self._cache() as cache:
            cache.execute("INSERT OR REPLACE INTO verdicts (key, reply) VALUES (?, ?)", (key, reply))
        self.asked += 1
        return reply

    def _cache(self) -> sqlite3.Connection:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.cache_path, timeout=60)
        connection.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        return connection

    def _ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": 64}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise PeftlabError(f"the judge at {self.url} refused the key (HTTP {error.code}); set "
                                   f"{KEY_VARIABLES[0]} to a key it accepts") from None
            raise PeftlabError(f"the judge at {self.url} answered HTTP {error.code} for model {self.model!r}; "
                               "check --judge-url and --judge-model") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PeftlabError(f"the judge at {self.url} is unreachable ({reason}); start it or fix --judge-url") from None
        try:
            if len(raw) > MAX_ANSWER_BYTES:
                raise ValueError("answer too large")
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise PeftlabError(f"the judge at {self.url} sent an answer that is not an OpenAI chat completion: "
                               f"{raw[:120]!r}; check --judge-url") from None


def _default_cache() -> Path:
    from peftlab.models.gguf_cache import cache_root

    return cache_root() / "judge.sqlite"


def rubric_score(reply: str, row: int) -> float:
    match = _SCORE.search(reply)
    value = float(match.group(1)) if match else None
    if value is None or not 1 <= value <= 10:
        raise PeftlabError(f"the judge's reply for test row {row} has no 'Score: N' with N from 1 to 10: {reply[:120]!r}; "
                           "use a stronger judge or a clearer --judge-prompt")
    return (value - 1) / 9


def pairwise_verdict(reply: str, row: int) -> str:
    match = _VERDICT.search(reply) or _BARE_VERDICT.match(reply)
    if not match:
        raise PeftlabError(f"the judge's reply for test row {row} has no 'Verdict: A', 'B' or 'tie': {reply[:120]!r}; "
                           "use a stronger judge or a clearer --judge-prompt")
    return match.group(1).upper() if match.group(1).lower() != "tie" else "tie"


def judge_metric(settings: JudgeSettings) -> Metric:
    judge = Judge(settings)

    def score(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
        template = judge.template("rubric")
        return [{"judge": rubric_score(judge.verdict(template.format(prompt=prompt, reference=refs[0], answer=answer)), row)}
                for row, (prompt, answer, refs) in enumerate(zip(context.prompts, predictions, references, strict=True), start=1)]

    return Metric("judge", ("judge",), "judge", "judge score", score,
                  f"rubric score 1-10 from {settings.model} at {settings.url}, as (score - 1) / 9")


def pairwise_metric(settings: JudgeSettings) -> Metric:
    judge = Judge(settings)

    def score(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
        if context.base_predictions is None:
            raise PeftlabError("--metric judge-pairwise compares answers with the base model's: evaluate an --adapter "
                               "(without --skip-base) or compare methods")
        if context.base_predictions is predictions:  # the base against itself: a tie by definition, nothing asked
            return [{"judge_win": 0.5, "judge_agreement": 1.0} for _ in predictions]
        template = judge.template("pairwise")
        scores = []
        for row, (prompt, answer, base, refs) in enumerate(
                zip(context.prompts, predictions, context.base_predictions, references, strict=True), start=1):
            first = pairwise_verdict(judge.verdict(template.format(prompt=prompt, reference=refs[0], answer_a=answer, answer_b=base)), row)
            second = pairwise_verdict(judge.verdict(template.format(prompt=prompt, reference=refs[0], answer_a=base, answer_b=answer)), row)
            wins = ({"A": 1.0, "B": 0.0, "tie": 0.5}[first], {"A": 0.0, "B": 1.0, "tie": 0.5}[second])
            scores.append({"judge_win": sum(wins) / 2, "judge_agreement": float(wins[0] == wins[1])})
        return scores

    return Metric("judge-pairwise", ("judge_win", "judge_agreement"), "judge_win", "judge win rate", score,
                  f"pairwise preference over the base model's answer by {settings.model} at {settings.url}, both orders "
                  "(win 1, tie 0.5, loss 0, mean of the orders); judge_agreement: both orders agree",
                  {"judge_win": "judge win rate", "judge_agreement": "order agreement"})
