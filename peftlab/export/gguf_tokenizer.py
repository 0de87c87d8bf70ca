"""A transformers tokenizer (or the GGUF file a base came from) as the tokenizer fields of a GGUF file.

Written here because the gguf package has no converter from a tokenizer object (llama.cpp's convert script,
which is not a library, reads tokenizer files): a byte-level BPE tokenizer becomes llama.cpp's 'gpt2' tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.export.gguf_families import ELSEWHERE


def copy_tokenizer_fields(writer: Any, base_gguf: Path) -> None:
    """Every tokenizer.* field of the GGUF file the base came from, with its GGUF type."""
    import gguf

    reader = gguf.GGUFReader(base_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), main, sub_type=sub)


LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def pre_tokenizer_name(pre: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before BPE (it names splits, it does not read them): GPT-2's own
    regex (a ByteLevel pre-tokenizer that splits: 'gpt-2'), Llama 3's split ('llama-bpe'), else llama.cpp's default."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    patterns = [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]
    return "llama-bpe" if patterns == [LLAMA3_SPLIT] else "default"


def tokenizer_fields(writer: Any, tokenizer: Any) -> None:
    """A transformers byte-level BPE tokenizer as llama.cpp's 'gpt2' tokenizer: tokens by id, their kinds, merges,
    special ids, whether a BOS is added, and the chat template."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    # a SentencePiece-style BPE (Metaspace, byte fallback: Llama 2, Mistral v0.1, Gemma) is another llama.cpp
    # tokenizer model, which this writer does not produce
    byte_level = '"ByteLevel"' in json.dumps([backend.get("pre_tokenizer"), backend.get("decoder")])
    if backend.get("model", {}).get("type") != "BPE" or not byte_level:
        raise PeftlabError("GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen style) or copies the "
                           f"fields of a base that came from a GGUF file; this tokenizer is neither; {ELSEWHERE}")
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise PeftlabError(f"GGUF export: the tokenizer's ids have gaps, which a GGUF token list cannot hold; {ELSEWHERE}")
    special = set(tokenizer.all_special_ids)
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    kinds = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL
             for token, i in by_id]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(backend.get("pre_tokenizer") or {}))
    writer.add_token_list([token for token, _ in by_id])
    writer.add_token_types(kinds)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id), (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)
