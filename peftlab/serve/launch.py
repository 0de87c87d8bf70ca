"""`peftlab serve`, top to bottom: find the base, load it once, attach the named adapters, start the HTTP server."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable

from peftlab.errors import PeftlabError
from peftlab.artifacts import adapter_folder, check_base, recorded_attn_implementation, recorded_model_name
from peftlab.generation import load_for_generation
from peftlab.serve import vllm_compat
from peftlab.serve.engine import Engine
from peftlab.serve.http import Server, start, stop
from peftlab.serve.limits import Limits

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct"


def parse_adapters(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise PeftlabError(f"--adapter {spec!r} is not NAME=DIR; example: --adapter support=runs/support/adapter")
        pairs.append((name.strip(), folder.strip()))
    return pairs


def base_model(model: str | None, adapters: list[tuple[str, str]]) -> str | None:
    """--model, else the base the first adapter was trained on (None = the embedded default)."""
    if model or not adapters:
        return model
    return recorded_model_name(adapter_folder(adapters[0][1]))


def load_engine(model: str | None, adapters: list[tuple[str, str]], dtype: str = "auto", base_name: str | None = None,
                device: str = "auto") -> Engine:
    spec = base_model(model, adapters)
    for _, folder in adapters:  # refuse a wrong base before spending the load time
        check_base(adapter_folder(folder), spec)
    # the base as the first adapter's training run loaded it (its attention implementation), else transformers' choice
    attention = recorded_attn_implementation(adapter_folder(adapters[0][1])) if adapters else "auto"
    engine = Engine(load_for_generation(spec, dtype, attn_implementation=attention, device=device), base_name or spec or DEFAULT_BASE_NAME, spec)
    for name, folder in adapters:
        engine.add_adapter(name, folder)
    return engine


def read_api_key(key_file: str | None, environment_key: str | None, say: Callable[[str], None] = print) -> str | None:
    """The key from --api-key-file, else $PEFTLAB_API_KEY; never from argv, which every user of the machine can read."""
    if key_file is None:
        key = environment_key
        where = "$PEFTLAB_API_KEY"
    else:
        path = Path(key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
            if path.stat().st_mode & 0o077:
                say(f"warning: --api-key-file {key_file} is readable by other users; chmod 600 {key_file}")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise PeftlabError(f"--api-key-file {key_file}: cannot read it ({reason}); write the key alone in a file you can read") from None
        where = f"--api-key-file {key_file}"
    if key is None:
        return None
    if not key or not key.isascii() or not key.isprintable() or " " in key:
        raise PeftlabError(f"the API key in {where} is empty or holds spaces or non-ASCII characters; "
                           "use printable ASCII, e.g. the output of `openssl rand -hex 32`")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def serve(model: str | None, adapter_specs: list[str], host: str, port: int, api_key: str | None, dtype: str,
          limits: Limits, max_batch_size: int, prefill_chunk_tokens: int, base_name: str | None = None,
          say: Callable[[str], None] = print, adapter_dir: str | None = None, max_adapters: int | None = None,
          device: str = "auto") -> None:
    """Load and serve until interrupted."""
    if not 0 <= port <= 65535:  # checked before the slow load, not left to bind()
        raise PeftlabError(f"--port {port} is out of range; choose a port from 1 to 65535 (0: any free port)")
    adapters = parse_adapters(adapter_specs)
    if adapter_dir and not Path(adapter_dir).is_dir():
        raise PeftlabError(f"--adapter-dir {adapter_dir} is not a folder; pass the folder that holds one adapter folder per name")
    if api_key is None and not is_loopback(host):
        say(f"warning: --host {host} without an API key: anyone who can reach this machine can generate and load adapters; "
            "set --api-key-file PATH or $PEFTLAB_API_KEY")
    engine = load_engine(model, adapters, dtype, base_name, device)
    say(f"base: {engine.base_name} ({engine.loaded.path}, {engine.loaded.dtype} on {engine.loaded.device}, context {engine.context_tokens} tokens)")
    for name, served in engine.models.items():
        if served.folder:
            line = vllm_compat.check(served.folder)
            mixing = "mixed into shared batches" if served.row_name else "batched per adapter"
            say(f"adapter: {name} = {served.folder} ({served.method}; {mixing}; {line})")
    try:
        server = start(engine, host, port, api_key, limits, max_batch_size=max_batch_size, prefill_chunk_tokens=prefill_chunk_tokens,
                       adapter_dir=adapter_dir, max_adapters=max_adapters)
    except OSError as error:
        raise PeftlabError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    say(f"serving on http://{host}:{server.port}/v1 (models: {', '.join(engine.models)})" + ("; API key required" if api_key else ""))
    try:
        wait_until_interrupted(server)
    finally:
        _stop_quietly(server)


def wait_until_interrupted(server: Server) -> None:
    server.thread.join()


def _stop_quietly(server: Server) -> None:
    try:
        stop(server)
    except Exception:  # shutting down after Ctrl-C: nothing left to save
        pass
