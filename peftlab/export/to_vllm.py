"""`peftlab export ADAPTER... --format vllm`: the adapters as vLLM serves them (LoRA folders), and the `vllm serve`
command line that serves them all on one base (serve.sh, README.md).

LoRA adapters are copied as they are; adapters peft converts to LoRA (LoHa, LoKr, VeRA, ...) go through
`--format lora` first. Each written folder is checked against vLLM's LoRA rules (serve/vllm_compat.py) before
anything is published. Flags as vLLM documents them (`vllm serve --help`, LoRAConfig): --enable-lora,
--lora-modules NAME=PATH..., --max-lora-rank (one of 1, 8, 16, 32, 64, 128, 256, 320, 512; default 16),
--max-loras (adapters in one batch, at least 1; default 1).
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any, Callable

from peftlab import outputs
from peftlab.artifacts import adapter_folder, recorded_model_name
from peftlab.errors import PeftlabError

MANIFEST = "vllm.json"
SCRIPT = "serve.sh"
README = "README.md"
VLLM_EXPORT = outputs.OutputKind("vLLM export", (MANIFEST,), (MANIFEST, SCRIPT, README),
                                 lambda folder: json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("adapters", []))


def named_sources(sources: list[str]) -> list[tuple[str, Path]]:
    """NAME=DIR or DIR (named after the run folder) -> (name, adapter folder); names are what clients send as `model`."""
    named = []
    for source in sources:
        name, _, folder = source.rpartition("=") if "=" in source else ("", "", source)
        path = adapter_folder(folder)
        name = name.strip() or (path.parent.name if path.name == "adapter" else path.name)
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise PeftlabError(f"adapter name {name!r} ({source}): use letters, digits, '-', '_' or '.'; e.g. support={folder}")
        named.append((name, path))
    duplicates = sorted({name for name, _ in named if [n for n, _ in named].count(name) > 1})
    if duplicates:
        raise PeftlabError(f"two adapters are named {duplicates[0]}; name them with NAME=DIR, e.g. a={named[0][1]}")
    return named


def common_base(named: list[tuple[str, Path]], model: str | None) -> str:
    """The one base every adapter was trained on (--model, else what they record), as vLLM loads it: a hub id or a folder."""
    from peftlab.models.loading import resolve_source

    bases = {recorded_model_name(folder) for _, folder in named} if not model else {model}
    if len(bases) > 1:
        raise PeftlabError(f"the adapters were trained on different bases ({', '.join(sorted(map(str, bases)))}); "
                           "vLLM serves adapters of one base: export each base's adapters separately")
    _, path = resolve_source(bases.pop())
    return str(Path(path).resolve()) if Path(path).exists() else path


def serve_command(base: str, names: list[str], max_lora_rank: int) -> str:
    """vllm serve BASE --enable-lora --lora-modules NAME=./NAME ... --max-lora-rank R --max-loras N (run in the export folder)."""
    modules = " ".join(shlex.quote(f"{name}=./{name}") for name in names)
    return (f"vllm serve {shlex.quote(base)} --enable-lora --lora-modules {modules} "
            f"--max-lora-rank {max_lora_rank} --max-loras {len(names)}")


def _write_adapter(name: str, folder: Path, tmp: Path, rank: int | float, model: str | None, say: Callable[[str], None],
                   device: str) -> None:
    from peftlab.methods import saved_method

    method = saved_method(folder)
    if method.vllm:
        shutil.copytree(folder, tmp / name)
    elif method.lora_conversion:
        from peftlab.export.to_lora import export_lora

        export_lora(str(folder), str(tmp / name), rank, model, False, say, device)
    else:
        raise PeftlabError(f"adapter {name} ({folder}): method {method.name} cannot be served by vLLM, which serves LoRA adapters; "
                           f"serve it with `peftlab serve --adapter {name}={folder}` or merge it (`peftlab merge`)")


def export_vllm(sources: list[str], output: str, rank: int | float = 32, model: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """Write OUTPUT: one LoRA folder per adapter, serve.sh and README.md with the `vllm serve` command, vllm.json."""
    from peftlab.serve import vllm_compat

    named = named_sources(sources)
    base = common_base(named, model)
    out = outputs.check_folder(output, overwrite, VLLM_EXPORT, outputs.inputs(model=model, **{f"adapter {n}": f for n, f in named}))
    names = [name for name, _ in named]
    try:
        with outputs.replaced_folder(out, VLLM_EXPORT) as tmp:
            for name, folder in named:
                _write_adapter(name, folder, tmp, rank, model, say, device)
                refused = vllm_compat.problems(tmp / name)
                if refused:
                    raise PeftlabError(f"adapter {name} ({folder}): vLLM would refuse it: {refused[0]}; nothing was written")
            max_rank = max(vllm_compat.required_max_lora_rank(tmp / name) for name in names)
            command = serve_command(base, names, max_rank)
            (tmp / SCRIPT).write_text(f'#!/bin/sh\n# written by peftlab export --format vllm\ncd "$(dirname "$0")" || exit 1\n'
                                      f'exec {command} "$@"\n', encoding="utf-8")
            (tmp / SCRIPT).chmod(0o755)
            (tmp / README).write_text(readme(command, names, named), encoding="utf-8")
            (tmp / MANIFEST).write_text(json.dumps({"base": base, "adapters": names, "max_lora_rank": max_rank,
                                                    "command": command}, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    say(f"export: {len(names)} adapter(s) for vLLM in {out}; start the server there with `sh {out / SCRIPT}`:\n  {command}")
    return {"folder": str(out), "base": base, "adapters": names, "max_lora_rank": max_rank, "command": command}


def readme(command: str, names: list[str], named: list[tuple[str, Path]]) -> str:
    first, folder = named[0]
    return (f"# vLLM serving of {', '.join(names)}\n\nWritten by `peftlab export --format vllm`. On a machine with vLLM "
            f"(`pip install vllm`, NVIDIA GPU), from this folder:\n\n```bash\n{command}\n```\n\n(`sh serve.sh` runs the same; "
            "extra flags such as `--port 8001` are passed on.) Clients name an adapter as the `model` of a request; "
            "`/v1/models` lists them.\n\nCheck that the server answers as the adapter does on its base:\n\n```bash\n"
            f"peftlab check {folder} --data ROWS.jsonl --server http://127.0.0.1:8000 --server-model {first}\n```\n")
