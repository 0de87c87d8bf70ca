"""Score one model on the comparison's test rows: batched generation, the chosen metrics, general-text loss and,
with --general-tasks, accuracy on general multiple-choice items."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path

from peftlab.compare.forgetting import general_text_loss
from peftlab.config import CompareSetup, RunConfig
from peftlab.data.readers import read_rows
from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics import JudgeSettings, Metric, described_keys, describe, resolve_metrics
from peftlab.evaluate.metrics.rouge import ROUGE
from peftlab.evaluate.predictions import score_generations
from peftlab.evaluate.references import EvalExample, eval_examples
from peftlab.generation import GenerationSettings, encode_prompts, load_for_generation
from peftlab.models.device import release_cached_memory

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class Scoring:
    """What every run of a comparison is scored by: its metrics (the first one's primary key decides) and whether
    general multiple-choice accuracy is measured."""

    metrics: list[Metric] = dataclasses.field(default_factory=lambda: [ROUGE])
    general_tasks: bool = False

    @property
    def primary(self) -> str:
        return self.metrics[0].primary

    @property
    def labels(self) -> dict[str, str]:
        return described_keys(describe(self.metrics))

    def stamp(self) -> dict[str, object]:
        """What each record carries so that reports name the metric without knowing it (report never imports evaluate)."""
        return {"primary": self.primary, "score_labels": self.labels}


def scoring_for(setup: CompareSetup) -> Scoring:
    """The setup's metrics resolved (a user function imported, a judge configured), before anything slow."""
    judge = JudgeSettings(**setup.judge) if setup.judge else JudgeSettings()
    scoring = Scoring(resolve_metrics(setup.metrics, judge), setup.general_tasks)
    if setup.select_by in ("metric", "rouge") and setup.trials and scoring.metrics[0].name == "judge-pairwise":
        raise PeftlabError("--select-by metric cannot use judge-pairwise (the validation rows have no base answers to "
                           "compare with); put another metric first, or select by loss")
    return scoring


@dataclass
class Scored:
    predictions: list[str]
    example_scores: list[dict[str, float]]
    scores: dict[str, float]
    general_loss: float
    eval_seconds: float
    general_tasks: dict | None = None  # accuracy over the general multiple-choice items, and per task
    confusion: dict | None = None  # label tasks (--metric accuracy): counts per true label of each predicted label


def test_examples(config: RunConfig, data: str, max_rows: int | None) -> list[EvalExample]:
    """The test rows every run is scored on (the first `max_rows`; the training sub-sampling does not apply)."""
    return eval_examples(read_rows(data, config.data.max_row_bytes), dataclasses.replace(config.data, max_samples=max_rows, every=1))


def score(config: RunConfig, examples: list[EvalExample], settings: GenerationSettings, trained: str | None = None,
          forgetting: bool = True, scoring: Scoring | None = None, base_answers: list[str] | None = None) -> Scored:
    """Load the base (with the trained result in `trained` applied), generate, score, free the model.
    Without `forgetting` neither general-text loss (nan) nor general tasks are measured: validation needs the metric alone.
    `base_answers`: the base model's answers to the same rows, for a pairwise judge."""
    from peftlab.compare.general_tasks import general_task_accuracy

    scoring = scoring or Scoring()
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, trained, model.attn_implementation, model.device)
    prompts, _ = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
    texts, per_example, summary = score_generations("base" if trained is None else trained, loaded, prompts, examples, settings,
                                                    lambda text: None, scoring.metrics, base_answers)
    general = general_text_loss(loaded.model, loaded.tokenizer, loaded.is_seq2seq) if forgetting else float("nan")
    tasks = general_task_accuracy(loaded.model, loaded.tokenizer, loaded.is_seq2seq) if forgetting and scoring.general_tasks else None
    del loaded
    gc.collect()
    release_cached_memory()
    keys = [key for metric in scoring.metrics for key in metric.keys]
    return Scored(texts, per_example, {k: summary[k] for k in keys}, general, summary["seconds"], tasks, summary.get("confusion"))


def stored_bytes(folder: Path) -> int:
    """What must be kept to use the result: its weight files (the whole model for full fine-tuning)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def base_bytes(model_path: str) -> int | None:
    folder = Path(model_path)
    return stored_bytes(folder) if folder.is_dir() else None
