"""chrF and BLEU per example through sacrebleu (its sentence scores, with its defaults), divided by 100.

The mean of sentence scores is what the intervals and the paired test of compare need; the
corpus-level figures sacrebleu reports for a whole test set weigh examples differently.
"""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics.base import Metric, ScoringContext


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError:
        raise PeftlabError("--metric chrf and bleu need sacrebleu, which is not installed; "
                           "pip install -c constraints.txt sacrebleu") from None
    return sacrebleu


def _chrf(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    sacrebleu = _sacrebleu()
    return [{"chrf": sacrebleu.sentence_chrf(p, refs).score / 100} for p, refs in zip(predictions, references, strict=True)]


def _bleu(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    sacrebleu = _sacrebleu()
    return [{"bleu": sacrebleu.sentence_bleu(p, refs).score / 100} for p, refs in zip(predictions, references, strict=True)]


CHRF = Metric("chrf", ("chrf",), "chrf", "chrF", _chrf, "sacrebleu's sentence chrF (all references at once) / 100, mean over examples")
BLEU = Metric("bleu", ("bleu",), "bleu", "BLEU", _bleu,
              "sacrebleu's sentence BLEU (smoothed, all references at once) / 100, mean over examples")
