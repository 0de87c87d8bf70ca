"""The whole workflow on one page: base zero-shot ROUGE, LoRA training, tuned ROUGE, samples side by side."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic, outputs
from peftlab.artifacts import ADAPTER_DIR
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.errors import PeftlabError
from peftlab.generation import GenerationSettings
from peftlab.evaluate.evaluation import evaluate
from peftlab.evaluate.metrics import Metric, described_keys
from peftlab.report.html import evaluation_page
from peftlab.report.tables import scores_table

DATA = Path(__file__).resolve().parent / "data"
DEMO_TRAIN = str(DATA / "train.jsonl")
DEMO_TEST = str(DATA / "test.jsonl")
MARKER = "demo.json"  # results; also marks the folder as a demo's, safe to replace with --overwrite
PAGE = "report.html"
DEMO = outputs.OutputKind("peftlab demo", (MARKER, "train"), (MARKER, PAGE, "base", "tuned", "train", "data"))


def prepare_output(out: Path, overwrite: bool, sources: list[outputs.Input]) -> Path:
    """The folder the demo is built in: `out` when it holds nothing, else (an earlier demo, --overwrite)
    a fresh staging folder beside it that replaces it when the demo has finished."""
    outputs.check_folder(out, overwrite, DEMO, sources)
    work = outputs.replacement_folder(out)
    work.mkdir(parents=True, exist_ok=True)
    return work


def split_rows(spec: str, out: Path) -> tuple[str, str]:
    """Hold out the last 10% of the rows (at least 1, at most 100) as the test set; write both as JSONL."""
    rows = read_rows(spec)
    if len(rows) < 2:
        raise PeftlabError(f"{spec} has {len(rows)} row; the demo needs at least 2 (or pass --test-data)")
    held = min(100, max(1, len(rows) // 10))
    paths = []
    for name, part in (("train", rows[:-held]), ("test", rows[-held:])):
        path = out / "data" / f"{name}.jsonl"
        atomic.write_text(path, "".join(json.dumps(row.values, ensure_ascii=False, default=str) + "\n" for row in part))
        paths.append(str(path))
    return paths[0], paths[1]


def run_demo(config: RunConfig, test_data: str | None, settings: GenerationSettings, overwrite: bool = False,
             say: Callable[[str], None] = lambda text: None, config_file: str | None = None,
             metrics: list[Metric] | None = None) -> dict[str, Any]:
    """Base eval -> train -> tuned eval on the same test rows and prompt (scored by `metrics`, default ROUGE); writes demo.json and report.html."""
    from peftlab.train.recipe import run as train

    final = Path(config.output or "runs/demo")
    out = prepare_output(final, overwrite, outputs.inputs(data=config.data.train, test_data=test_data, model=config.model.name,
                                                          config=config_file))
    train_data = config.data.train or DEMO_TRAIN
    if test_data is None:
        train_data, test_data = (train_data, DEMO_TEST) if train_data == DEMO_TRAIN else split_rows(train_data, out)
    config = dataclasses.replace(config, output=str(out / "train"), data=dataclasses.replace(config.data, train=train_data))
    # every test row, whatever sub-sampling the training data uses
    eval_run = dataclasses.replace(config, data=dataclasses.replace(config.data, max_samples=None, every=1))

    say("1/3 base model, zero-shot")
    base = evaluate(eval_run, test_data, str(out / "base"), settings=settings, say=say, metrics=metrics)
    labels = described_keys(base["metrics"])
    say(scores_table(base["results"], labels))
    say("2/3 training LoRA" if config.method == "lora" else f"2/3 training {config.method}")
    summary = train(config, overwrite=True, say=say)
    say("3/3 tuned model")
    tuned = evaluate(eval_run, test_data, str(out / "tuned"), adapter=str(out / "train" / ADAPTER_DIR),
                     settings=settings, include_base=False, say=say, metrics=metrics,
                     base_answers=[record["predictions"]["base"] for record in base["records"]])

    results = {"base": base["results"]["base"], "tuned": tuned["results"]["tuned"]}
    records = [{**b, "predictions": {**b["predictions"], **t["predictions"]}, "scores": {**b["scores"], **t["scores"]}}
               for b, t in zip(base["records"], tuned["records"], strict=True)]
    facts = {
        "model": base["model"], "method": summary["method"], "train data": train_data, "test data": test_data,
        "test rows": base["rows"], "training steps": summary["steps"], "training seconds": round(summary["train_seconds"], 1),
        "trainable parameters": f"{summary['trainable_parameters']:,} ({summary['trainable_percent']:.2f}%)",
        "generation": f"greedy, batch {settings.batch_size}, at most {settings.max_new_tokens} new tokens" if settings.num_beams == 1
        else f"beam search ({settings.num_beams}), batch {settings.batch_size}, at most {settings.max_new_tokens} new tokens",
        **{f"metric {name}": entry["description"] for name, entry in base["metrics"].items()},
    }
    note = "Demo data: synthetic dialogues written by peftlab, not DialogSum." if test_data == DEMO_TEST else ""
    page = evaluation_page("peftlab demo: base vs tuned", facts, results, records, note, labels=labels, primary=base["primary"])
    atomic.write_text(out / PAGE, page)
    atomic.write_text(out / MARKER, json.dumps({"results": results, "metrics": base["metrics"], "facts": facts, "train": summary},
                                               indent=2) + "\n")
    outputs.publish_replacement(out, final, DEMO)
    return {"results": results, "metrics": base["metrics"], "records": records, "page": str(final / PAGE), "summary": summary}
