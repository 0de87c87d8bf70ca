"""`peftlab check`: does the deployed model answer as the trained one? The adapter on its base, the merged model,
a LoRA adapter converted from it, exported GGUF files in llama.cpp (a runtime we did not write; decoder-only models: the
merged file, or a LoRA file on the base's file) and a running OpenAI-compatible server answer the same prompts greedily;
the table shows each answer, where the first differing token is, how close each runtime's logits are where it gives
them, and whether the chat template and stop tokens agree."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError
from peftlab.generation import GenerationSettings

REFERENCE = "adapter"  # every other runtime is compared with the adapter on its base, as training evaluated it


@dataclass(frozen=True)
class LogitAgreement:
    """A runtime's logits against the adapter's where the adapter chose its answer's tokens (its answer fed to both,
    one pass per prompt): what an answer's first difference hides, how near the runtime came to choosing otherwise."""
    relative_difference: float  # the largest over the prompts of merge.relative_difference, as export measures its probe
    same_top_token: float  # share of those choices where both rank the same token first
    choices: int  # the adapter's answer tokens and each answer's end, over all prompts


@dataclass
class Parity:
    prompts: list[str | list[dict[str, Any]]]  # a text, or a conversation up to the turn eval scores
    answers: dict[str, list[list[int]]]  # runtime -> per prompt, the new token ids up to (without) the end token
    texts: dict[str, list[str]]
    setup_problems: list[str] = field(default_factory=list)  # chat template or stop tokens that differ
    logits: dict[str, LogitAgreement | None] = field(default_factory=dict)  # runtimes that give logits (not a server)

    def identical(self, runtime: str) -> int:
        return sum(a == b for a, b in zip(self.answers[runtime], self.answers[REFERENCE]))

    def agreement(self, runtime: str) -> float:
        return self.identical(runtime) / max(1, len(self.prompts))

    def first_difference(self, runtime: str, index: int) -> int | None:
        return first_difference(self.answers[REFERENCE][index], self.answers[runtime][index])


def first_difference(ours: list[int], theirs: list[int]) -> int | None:
    """Where two answers part (a token position), None when they are identical."""
    for position, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return position
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def until_end(tokens: list[int], ends: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in ends:
            return tokens[:position]
    return tokens


@dataclass(frozen=True)
class Server:
    url: str  # the server's root or its /v1 base, e.g. http://127.0.0.1:8000
    model: str | None = None  # the served name of the adapter; None: the one adapter the server lists
    api_key: str | None = None
    bounds: Any = None  # server_client.Bounds: the deadline and size cap of each answer (None: the defaults)


def check_parity(config: RunConfig, adapter: str, texts: list[str | list[dict[str, Any]]], settings: GenerationSettings, gguf: str | None,
                 say: Callable[[str], None] = lambda text: None, server: Server | None = None, lora: str | None = None,
                 gguf_lora: str | None = None, base_gguf: str | None = None) -> Parity:
    """The adapter's greedy answers, then each runtime's: the merged model, `lora` (a LoRA folder, e.g. the adapter
    converted by `peftlab export --format lora`) on the base, the GGUF file `gguf` and the llama.cpp LoRA file
    `gguf_lora` on `base_gguf` in llama.cpp, and the server. Where a runtime gives logits they are compared too."""
    from peftlab.export.llama_cpp_runtime import decision_logits, greedy_answers, llama_cpp_runs, open_llama
    from peftlab.export.merge import merged_model
    from peftlab.generation import encode_prompts, eos_ids, generate_ids, load_for_generation
    from peftlab.generation.uncached import forward_logits

    lora_folder = lora_to_compare(lora, config.model.name) if lora else None
    loaded = load_for_generation(config.model.name, "fp32", adapter, config.model.attn_implementation, config.model.device)
    seq2seq = loaded.is_seq2seq
    if seq2seq and (gguf or gguf_lora):
        raise PeftlabError(f"{'--gguf' if gguf else '--gguf-lora'}: this adapter's base is an encoder-decoder (T5), which peftlab "
                           "does not export to GGUF; drop it to check the merged model (and --lora, --server) against the adapter")
    llama_runs = llama_cpp_runs(config.model.name, gguf, gguf_lora, base_gguf)  # each file checked before minutes of generation
    prompts, chat = encode_prompts(loaded, texts, config.data.chat_template)
    if server:
        model = served_model(server)  # an unreachable server or unknown name fails before minutes of generation
    ends = eos_ids(loaded.model, loaded.tokenizer)
    answer = lambda model: [until_end(t, ends) for t in generate_ids(model, loaded.tokenizer, prompts, seq2seq, settings)]  # noqa: E731
    answers = {REFERENCE: answer(loaded.model)}
    say(f"check: {len(prompts)} prompts, greedy, up to {settings.max_new_tokens} new tokens; {REFERENCE} on its base done")
    reference = lambda i: forward_logits(loaded.model, prompts[i], answers[REFERENCE][i], seq2seq)  # noqa: E731
    torch_runs = {"merged": lambda: merged_model(adapter, config.model.name, "fp32", device=config.model.device)[0]}
    if lora_folder:
        torch_runs[f"LoRA {lora_folder.name}"] = lambda: load_for_generation(
            config.model.name, "fp32", str(lora_folder), config.model.attn_implementation, config.model.device).model
    logits = {}
    for name, build in torch_runs.items():  # one at a time: each model is dropped before the next loads
        runtime = build()
        answers[name] = answer(runtime)
        logits[name] = logit_agreement(reference, lambda i, m=runtime: forward_logits(m, prompts[i], answers[REFERENCE][i], seq2seq),
                                       len(prompts))
        del runtime
        say(f"check: {name} done")
    longest = max(map(len, prompts)) + settings.max_new_tokens
    for name, (model_file, lora_file) in llama_runs.items():
        llm = open_llama(model_file, lora_file, longest, logits=True)
        answers[name] = greedy_answers(llm, prompts, settings.max_new_tokens)
        logits[name] = logit_agreement(reference, lambda i, m=llm: decision_logits(m, prompts[i], answers[REFERENCE][i]), len(prompts))
        say(f"check: {name} done")
    problems = template_problems(adapter, loaded.tokenizer, [file for file, _ in llama_runs.values()])
    decode = lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    decoded = {k: [decode(a) for a in v] for k, v in answers.items()}
    if server:
        replies = server_texts(server, model, texts, chat, settings.max_new_tokens)
        # an identical text is an identical answer; else the text re-encoded locates the first difference
        answers[f"server {model}"] = [answers[REFERENCE][i] if reply == decoded[REFERENCE][i]
                                      else loaded.tokenizer(reply, add_special_tokens=False)["input_ids"] for i, reply in enumerate(replies)]
        decoded[f"server {model}"] = replies
        say("check: server done")
    return Parity(texts, answers, decoded, problems, logits)


def check_command(adapter: str | Path, *flags: str) -> str:
    """The `peftlab check` command line that measures an export against `adapter`: --data the rows its training run
    evaluated (else trained) on, as run.yaml records them, while that file is there; else ROWS for the user to fill."""
    from peftlab.artifacts import adapter_folder, read_run_config

    recorded = read_run_config(adapter_folder(adapter))
    rows = next((r for r in (recorded.data.eval, recorded.data.train) if r and Path(r).is_file()), None) if recorded else None
    return " ".join(["peftlab check", str(adapter), "--data", rows or "ROWS", *flags])


def lora_to_compare(lora: str, model_name: str | None) -> Path:
    """`--lora DIR`: a LoRA adapter folder on the adapter's base, checked before any model loads."""
    from peftlab.artifacts import adapter_folder, check_base
    from peftlab.methods import saved_method

    if not Path(lora).expanduser().is_dir():
        raise PeftlabError(f"--lora {lora} does not exist; write it with `peftlab export ADAPTER --format lora --output {lora}`")
    folder = adapter_folder(lora)
    method = saved_method(folder)
    if not method.plain_lora:
        raise PeftlabError(f"--lora {lora} is a {method.name} adapter, not a LoRA one: convert it with `peftlab export {lora} "
                           "--format lora --output DIR` and pass DIR, or check it as the adapter itself")
    check_base(folder, model_name)
    return folder


def logit_agreement(reference: Callable[[int], Any], runtime: Callable[[int], Any], prompts: int) -> LogitAgreement | None:
    """Per prompt, the logits of both at the adapter's token choices; None when their vocabularies differ in size."""
    import torch

    from peftlab.export.merge import relative_difference

    worst, same, choices = 0.0, 0, 0
    with torch.inference_mode():
        for i in range(prompts):
            ours, theirs = reference(i).float().cpu(), runtime(i).float().cpu()
            if ours.shape != theirs.shape:
                return None
            worst = max(worst, relative_difference(theirs, ours))
            same += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
            choices += len(ours)
    return LogitAgreement(worst, same / max(1, choices), choices)


def _call(server: Server, path: str, body: dict[str, Any] | None = None) -> Any:
    from peftlab.export.server_client import HttpAnswerError, request_json

    base = server.url.rstrip("/")
    url = (base if base.endswith("/v1") else base + "/v1") + path
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {server.api_key}"} if server.api_key else {})}
    try:
        return request_json(url, body, headers, server.bounds)
    except HttpAnswerError as error:
        hint = "; set $PEFTLAB_API_KEY to the server's key" if error.status == 401 else ""
        raise PeftlabError(f"--server {server.url}: {url} answered {error.status}: {error.detail}{hint}") from None
    except PeftlabError as error:
        raise PeftlabError(f"--server {server.url}: {error}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise PeftlabError(f"--server {server.url}: cannot reach {url} ({error}); start it with `peftlab serve --adapter "
                           "NAME=ADAPTER` or pass the URL it listens on") from None


def _field(server: Server, answer: Any, *path: str | int) -> Any:
    """answer[path[0]][path[1]]...; a server that answers another shape is named, with what it sent (exit 2, not a crash)."""
    value = answer
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{k!r}]" for k in path)
            raise PeftlabError(f"--server {server.url}: the answer has no {where} (it sent {json.dumps(answer)[:120]}); "
                               "is it an OpenAI-compatible API?") from None
    return value


def served_model(server: Server) -> str:
    """The name to ask for: --server-model, else the one adapter the server lists (a model with a parent)."""
    listing = _call(server, "/models")
    cards = _field(server, listing, "data")
    names = [str(_field(server, listing, "data", i, "id")) for i in range(len(cards) if isinstance(cards, list) else 1)]
    if server.model is not None:
        if server.model not in names:
            raise PeftlabError(f"--server-model {server.model}: the server serves {', '.join(names) or 'nothing'}; pass one of them")
        return server.model
    adapters = [name for name, card in zip(names, cards) if isinstance(card, dict) and card.get("parent")]
    if len(adapters) != 1:
        raise PeftlabError(f"--server {server.url} serves {', '.join(names) or 'nothing'}: pass --server-model NAME, the "
                           "name it serves this adapter under")
    return adapters[0]


def server_texts(server: Server, model: str, texts: list[str | list[dict[str, Any]]], chat: bool, max_new_tokens: int) -> list[str]:
    """Greedy answers from the server: a conversation as its messages, a prompt as one user message when training used
    the chat template (the server's own template builds the prompt, which is what is checked), else as a plain
    completion prompt."""
    replies = []
    for text in texts:
        body: dict[str, Any] = {"model": model, "max_tokens": max_new_tokens, "temperature": 0}
        if chat or isinstance(text, list):
            messages = text if isinstance(text, list) else [{"role": "user", "content": text}]
            answer = _call(server, "/chat/completions", {**body, "messages": messages})
            replies.append(str(_field(server, answer, "choices", 0, "message", "content") or "").strip())
        else:
            answer = _call(server, "/completions", {**body, "prompt": text})
            replies.append(str(_field(server, answer, "choices", 0, "text") or "").strip())
    return replies


def template_problems(adapter: str, tokenizer: Any, ggufs: list[str]) -> list[str]:
    """Chat template and end token as each side holds them: the adapter folder's own tokenizer files (what a runtime
    that reads the folder uses), the base's tokenizer (what peftlab and the merged model use), each GGUF model file's fields."""
    from transformers import AutoTokenizer

    from peftlab.artifacts import adapter_folder

    sides = {"base tokenizer": (tokenizer.chat_template, tokenizer.eos_token_id)}
    folder = adapter_folder(adapter)
    if (folder / "tokenizer_config.json").is_file():
        saved = AutoTokenizer.from_pretrained(folder)
        sides["adapter folder"] = (saved.chat_template, saved.eos_token_id)
    for gguf in ggufs:
        import gguf as gguf_package

        fields = gguf_package.GGUFReader(gguf).fields
        template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
        eos = fields["tokenizer.ggml.eos_token_id"].contents() if "tokenizer.ggml.eos_token_id" in fields else None
        sides[f"GGUF file {Path(gguf).name}"] = (template, eos)
    problems = []
    (first, (template, eos)), *others = sides.items()
    for name, (other_template, other_eos) in others:
        if other_template != template:
            problems.append(f"the chat template differs between the {first} and the {name}: prompts built by each differ")
        if other_eos != eos:
            problems.append(f"the end token differs between the {first} ({eos}) and the {name} ({other_eos}): answers stop elsewhere")
    return problems


def table(parity: Parity, width: int = 60) -> str:
    runtimes = [r for r in parity.answers if r != REFERENCE]
    lines = [f"{'#':>3}  {REFERENCE + ' answer':<{width}}  " + "  ".join(f"{r:<18}" for r in runtimes)]
    for i in range(len(parity.prompts)):
        text = parity.texts[REFERENCE][i].replace("\n", " ")
        cells = []
        for runtime in runtimes:
            position = parity.first_difference(runtime, i)
            cells.append(f"{'same' if position is None else f'differs at token {position}':<18}")
        lines.append(f"{i + 1:>3}  {text[:width]:<{width}}  " + "  ".join(cells))
    for runtime in runtimes:
        logits = parity.logits.get(runtime)
        lines.append(f"{runtime}: {100 * parity.agreement(runtime):.0f}% of answers identical to the {REFERENCE}'s "
                     f"({parity.identical(runtime)}/{len(parity.prompts)})" + (
                         f"; logits at the {REFERENCE}'s {logits.choices} token choices: relative difference "
                         f"{logits.relative_difference:.1e}, same top token {100 * logits.same_top_token:.2f}%" if logits else ""))
        for i in range(len(parity.prompts)):
            position = parity.first_difference(runtime, i)
            if position is not None:
                lines.append(f"  #{i + 1} first difference at token {position}: {REFERENCE} {parity.texts[REFERENCE][i][:80]!r} "
                             f"vs {parity.texts[runtime][i][:80]!r}")
    return "\n".join(lines)
