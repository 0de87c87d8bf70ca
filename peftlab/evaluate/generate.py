"""`peftlab generate`: one prompt or a file of rows through base (+ adapter), prompts built exactly as training built them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic, outputs
from peftlab.artifacts import adapter_folder
from peftlab.config import RunConfig
from peftlab.data.examples import bare_prompt, generation_prompts, subsample
from peftlab.data.readers import Row, read_rows
from peftlab.errors import PeftlabError
from peftlab.generation import GenerationSettings, encode_prompts, generate, load_for_generation


ANSWER_KEYS = {"where", "input", "output"}  # one line of generate's answers file


def answers_file(path: Path) -> bool:
    """Whether `path` holds answers `peftlab generate` wrote: JSON lines of exactly its keys, at least one."""
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return bool(records) and all(isinstance(record, dict) and set(record) == ANSWER_KEYS for record in records)


def check_answers_output(output: str, overwrite: bool, config: RunConfig, adapter: str | None, data: str | None) -> None:
    sources = outputs.inputs(data=data, model=config.model.name, adapter=adapter_folder(adapter) if adapter else None)
    outputs.check_file(output, overwrite, "an answers file", answers_file, sources)


def run_generate(config: RunConfig, adapter: str | None, prompt: str | None, data: str | None, output: str | None,
                 settings: GenerationSettings, say: Callable[[str], None] = lambda text: None,
                 overwrite: bool = False) -> list[dict[str, Any]]:
    """Generate for PROMPT (filled into the template's {prompt}) or every row of DATA; returns one record per prompt."""
    if (prompt is None) == (data is None):
        raise PeftlabError("give either a PROMPT or --data FILE (not both, not neither)")
    if output:
        check_answers_output(output, overwrite, config, adapter, data)
    if prompt is not None:
        rows, texts = [Row({}, "PROMPT")], [bare_prompt(prompt, config.data)]
    else:
        rows = subsample(read_rows(data, config.data.max_row_bytes), config.data.every, config.data.max_samples)
        if not rows:
            raise PeftlabError(f"{data} has no rows; add some or point --data at another file")
        texts = generation_prompts(rows, config.data)
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, adapter, model.attn_implementation, model.device)
    # a model tuned on plain text never saw the chat template: its prompts go in as written
    ids, _ = encode_prompts(loaded, texts, "off" if config.data.format == "text" else config.data.chat_template)
    say(f"generate: {len(ids)} prompt(s) on {loaded.spec} ({loaded.dtype}, {loaded.device})" + (f" + adapter {adapter}" if adapter else ""))
    outputs = generate(loaded.model, loaded.tokenizer, ids, loaded.is_seq2seq, settings,
                       progress=lambda done: say(f"  {done}/{len(ids)} generated") if len(ids) > settings.batch_size else None,
                       labels=[row.where for row in rows])
    records = [{"where": row.where, "input": text, "output": out} for row, text, out in zip(rows, texts, outputs)]
    if output:
        try:
            atomic.write_text(Path(output), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        except OSError as error:
            raise PeftlabError(f"cannot write {output}: {error.strerror}; choose another --output") from None
    return records
