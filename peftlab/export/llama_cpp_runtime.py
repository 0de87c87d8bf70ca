"""llama.cpp itself (llama-cpp-python, a runtime we did not write) as `peftlab check` runs it: a GGUF model file, with a
llama.cpp LoRA file applied or not, answering prompts greedily and giving its logits; and what each GGUF file holds,
checked before any of it is run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.models.gguf_cache import GGUF_MAGIC, base_gguf_file


def gguf_kind(path: str, flag: str) -> str:
    """What a GGUF file holds as its header says: "model" or "adapter" (general.type; files without it are models).
    Anything else, or a missing file, is refused in one line naming `flag`."""
    import gguf

    file = Path(path).expanduser()
    if not file.is_file():
        raise PeftlabError(f"{flag} {path} does not exist; write it with `peftlab export`")
    with open(file, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise PeftlabError(f"{flag} {path} is not a GGUF file (it does not start with GGUF); pass a file `peftlab export` wrote")
    try:
        field = gguf.GGUFReader(file).get_field(gguf.Keys.General.TYPE)
    except (ValueError, KeyError, IndexError, TypeError, OSError):  # what gguf 0.19's reader raises on a cut or garbled file
        raise PeftlabError(f"{flag} {path} is a damaged or truncated GGUF file; export it again") from None
    return str(field.contents()) if field is not None else "model"


def needs_llama_cpp(flag: str) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise PeftlabError(f"{flag} needs llama.cpp's Python binding: pip install llama-cpp-python (it compiles llama.cpp, "
                           f"minutes on a laptop), or drop {flag}") from None


def open_llama(gguf: str, lora: str | None, context_tokens: int, logits: bool = False) -> Any:
    """A llama.cpp model on `gguf` with the LoRA file `lora` applied (None: none); `logits`: keep every position's logits."""
    from llama_cpp import Llama

    try:
        return Llama(model_path=gguf, n_ctx=max(512, context_tokens), n_batch=512, verbose=False, seed=0, lora_path=lora,
                     logits_all=logits)
    except (RuntimeError, ValueError) as error:  # llama.cpp refused the file (another architecture, a LoRA of another base)
        what = f"{lora} on {gguf}" if lora else gguf
        raise PeftlabError(f"llama.cpp cannot load {what} ({str(error).splitlines()[0]}); export it again for this base") from None


def greedy_answers(llm: Any, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy answers fed the same prompt token ids, up to (without) llama.cpp's end token."""
    end = llm.token_eos()
    answers = []
    for prompt in prompts:
        llm.reset()
        tokens: list[int] = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == end or len(tokens) >= max_new_tokens:
                break
            tokens.append(token)
        answers.append(tokens)
    return answers


def decision_logits(llm: Any, prompt: list[int], answer: list[int]) -> Any:
    """The logits (len(answer) + 1 rows, as torch) that predict each token of `answer` after `prompt`, then the next:
    one pass over the whole sequence, as `generation.uncached.forward_logits` gives them in torch."""
    import torch

    llm.reset()
    llm.eval(prompt + answer)
    return torch.from_numpy(llm.scores[len(prompt) - 1: len(prompt) + len(answer)].copy())


def llama_cpp_answers(gguf: str, prompts: list[list[int]], max_new_tokens: int, lora: str | None = None) -> list[list[int]]:
    """Greedy answers from llama.cpp on `gguf` (with the LoRA file `lora`)."""
    needs_llama_cpp("--gguf")
    if not Path(gguf).is_file():
        raise PeftlabError(f"--gguf {gguf} does not exist; write it with `peftlab export ADAPTER --output {gguf}`")
    llm = open_llama(gguf, lora, max(len(p) for p in prompts) + max_new_tokens)
    return greedy_answers(llm, prompts, max_new_tokens)


def llama_cpp_runs(model_name: str | None, gguf: str | None, gguf_lora: str | None, base_gguf: str | None) -> dict[str, tuple[str, str | None]]:
    """What `peftlab check` runs in llama.cpp, by label: (GGUF model file, llama.cpp LoRA file or None), each file
    checked to hold what its flag says. The LoRA file's base is --base-gguf, else the file the base came from."""
    if base_gguf and not gguf_lora:
        raise PeftlabError("--base-gguf names the base file a --gguf-lora file is applied to: pass --gguf-lora FILE too, or drop it")
    runs: dict[str, tuple[str, str | None]] = {}
    if gguf:
        if gguf_kind(gguf, "--gguf") != "model":
            raise PeftlabError(f"--gguf {gguf} is a llama.cpp LoRA file, not a model: pass it as --gguf-lora {gguf}")
        runs[f"llama.cpp {Path(gguf).name}"] = (gguf, None)
    if gguf_lora:
        if gguf_kind(gguf_lora, "--gguf-lora") != "adapter":
            raise PeftlabError(f"--gguf-lora {gguf_lora} is a whole model, not a llama.cpp LoRA file: pass it as --gguf {gguf_lora}, "
                               "or write the LoRA file with `peftlab export ADAPTER --format gguf-lora`")
        base = base_gguf or base_gguf_file(model_name)
        if base is None:
            raise PeftlabError(f"--gguf-lora {gguf_lora} needs the base as a GGUF file to apply it to, and this base did not come "
                               "from one: pass --base-gguf FILE (the base converted by llama.cpp's convert_hf_to_gguf.py)")
        if gguf_kind(str(base), "--base-gguf") != "model":
            raise PeftlabError(f"--base-gguf {base} is a llama.cpp LoRA file, not the base model: pass the base's own GGUF file")
        runs[f"llama.cpp {Path(base).name} + {Path(gguf_lora).name}"] = (str(base), gguf_lora)
    if runs:  # after the files: a wrong file is named whether llama.cpp is installed or not
        needs_llama_cpp("--gguf" if gguf else "--gguf-lora")
    return runs
