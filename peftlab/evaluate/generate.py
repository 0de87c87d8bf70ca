"""`peftlab generate`: one prompt or a file of rows through base (+ adapter), prompts built exactly as training built them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic
from peftlab.config import RunConfig
from peftlab.data.examples import fill_template, subsample
from peftlab.data.readers import Row, read_rows
from peftlab.data.tokenize import uses_chat_template
from peftlab.errors import PeftlabError
from peftlab.inference import GenerationSettings, generate, source_ids
from peftlab.evaluate.evaluation import eval_config
from peftlab.models import load_model
from peftlab.artifacts import load_adapted

RAW_TEMPLATE = "{prompt}"  # without an adapter and without --template a prompt goes to the model as written


def generate_config(adapter: str | None, overrides: list[str], flags: dict[str, Any]) -> RunConfig:
    """With an adapter: its training run's template, columns and base. Without: the prompt as written unless --template."""
    if not adapter and flags.get("data.template") is None:
        flags = {**flags, "data.template": RAW_TEMPLATE}
    return eval_config(adapter, overrides, flags)


def run_generate(config: RunConfig, adapter: str | None, prompt: str | None, data: str | None, output: str | None,
                 settings: GenerationSettings, say: Callable[[str], None] = lambda text: None) -> list[dict[str, Any]]:
    """Generate for PROMPT (filled into the template's {prompt}) or every row of DATA; returns one record per prompt."""
    if (prompt is None) == (data is None):
        raise PeftlabError("give either a PROMPT or --data FILE (not both, not neither)")
    rows = [Row({config.data.columns.get("prompt", "prompt"): prompt}, "PROMPT")] if prompt is not None else \
        subsample(read_rows(data), config.data.every, config.data.max_samples)
    if not rows:
        raise PeftlabError(f"{data} has no rows; add some or point --data at another file")
    texts = [fill_template(row, config.data) for row in rows]
    loaded = load_adapted(adapter, config.model.name, config.model.dtype) if adapter else load_model(config.model.name, config.model.dtype)
    chat = uses_chat_template(loaded.tokenizer, config.data.chat_template, loaded.is_seq2seq)
    ids = [source_ids(loaded.tokenizer, text, chat, loaded.is_seq2seq) for text in texts]
    say(f"generate: {len(ids)} prompt(s) on {loaded.spec} ({loaded.dtype})" + (f" + adapter {adapter}" if adapter else ""))
    outputs = generate(loaded.model, loaded.tokenizer, ids, loaded.is_seq2seq, settings,
                       progress=lambda done: say(f"  {done}/{len(ids)} generated") if len(ids) > settings.batch_size else None)
    records = [{"where": row.where, "input": text, "output": out} for row, text, out in zip(rows, texts, outputs)]
    if output:
        try:
            atomic.write_text(Path(output), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        except OSError as error:
            raise PeftlabError(f"cannot write {output}: {error.strerror}; choose another --output") from None
    return records
