"""Every served adapter's lifecycle (`AdapterPool`): names checked, built off to the side in time slices between
decoding steps, installed at once, pinned or evicted least-recently-used, unloaded once its rows are done.

peft builds an adapter in pure Python (about 0.7 s for a LoRA on every linear layer of a 135M
model). Run in a thread beside the decoding loop it takes the interpreter lock from it for most
of that time (a 0.3 s step grew to 1.2 s when measured); run in the loop it stalls every stream
for several steps. So the loading thread runs only while the loop lets it, a slice of time after
each step (it pauses itself at its next Python call when the slice ends), and builds on a copy of
the module tree that shares the base weights and that no running step touches. Installing the
result takes milliseconds: a new family is registered, or a LoRA adapter's layers are moved into
the shared LoRA model (`transplant_lora`).
"""

from __future__ import annotations

import copy
import functools
import logging
import re
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftlab.errors import PeftlabError
from peftlab.serve.jobs import Busy

log = logging.getLogger(__name__)
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a folder name under --adapter-dir: no path separators
BASE_ROW = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


@functools.cache
def reserved_adapter_names() -> frozenset[str]:
    """Names an adapter may not take: peft keeps each adapter under its name in tables that are attributes of its
    layers (lora_A, lora_dropout, scaling, ...), which sit beside the layer's own attributes and submodules
    (base_layer, ...) and inside torch's ModuleDict / ParameterDict (which refuse their own attribute names as keys).
    An adapter named like one of them swaps a shared table (an adapter named `lora_A` replaced every LoRA layer's
    lora_A table, breaking the adapters already served). Derived from the installed peft, every tuner layer: a name
    one method uses (LoHa's `alpha`) is refused for all, since the rule must hold before the folder is read."""
    import torch
    from peft import LoraConfig
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    classes, stack = set(), [BaseTunerLayer]
    while stack:
        cls = stack.pop()
        if cls not in classes:
            classes.add(cls)
            stack.extend(cls.__subclasses__())
    names = {BASE_ROW}
    for cls in classes:
        names.update(cls.adapter_layer_names, cls.other_param_names)
    names.update(dir(torch.nn.ModuleDict), dir(torch.nn.ParameterDict))  # torch's own attributes: train, keys, forward, ...
    probe = LoraLinear(torch.nn.Linear(1, 1), "probe", config=LoraConfig(r=1), r=1, lora_alpha=1)
    names.update(vars(probe), probe._modules)  # the attributes and submodules a layer gets in __init__ (base_layer, ...)
    names.discard("probe")
    return frozenset(names)


def check_adapter_name(name: str, taken: Any) -> None:
    """PeftlabError for an empty, taken or reserved name, or one with a dot (torch refuses dots in module names)."""
    if not name or name in taken:
        raise PeftlabError(f"adapter name '{name}' is empty or already taken; give each adapter a unique name")
    if name in reserved_adapter_names() or "." in name:
        raise PeftlabError(f"adapter name '{name}' is reserved: peft or torch uses it for its own attributes (or it holds a "
                           "dot); choose another name, e.g. 'my-adapter'")


def shared_weights_copy(model: Any) -> Any:
    """A copy of the module tree whose parameters and buffers are the same tensors: no second set of weights.

    peft injects its layers into the module tree it is given, so each family gets its own tree;
    the base weights stay in memory once.
    """
    memo = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


@dataclass
class Prepared:
    """An adapter built and ready to install: `model` is a PEFT model on its own shared-weights tree."""

    name: str
    folder: Path
    method: Any  # the peftlab Method (servable, name)
    model: Any
    mixable: bool  # its rows share the LoRA adapters' forward pass (methods.shares_mixed_batches)


def _adapter_dicts(layer: Any) -> dict[str, Any]:
    """Every per-adapter table of a peft layer (lora_A, scaling, r, ...), by attribute name: the ones peft declares
    (adapter_layer_names, other_param_names), never the module's own dicts (_modules), whose keys are not adapters."""
    names = (*layer.adapter_layer_names, *layer.other_param_names)
    return {name: getattr(layer, name) for name in names if hasattr(getattr(layer, name, None), "__contains__")}


def transplant_lora(live: Any, built: Any, name: str) -> None:
    """Move adapter `name` from the PEFT model `built` into the PEFT model `live` (both wrap trees sharing the base weights).

    A layer `live` already wraps gets the adapter's entries in its tables; a layer only the new
    adapter targets is replaced by the built layer (whose other adapters' rows skip it, as in
    peft's mixed batches). Hand-written: peft can only build an adapter in the model it serves.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for path, layer in list(built.base_model.model.named_modules()):
        if not isinstance(layer, BaseTunerLayer) or name not in getattr(layer, "lora_A", {}):
            continue
        target = live.base_model.model.get_submodule(path)
        if isinstance(target, BaseTunerLayer):
            target_tables = _adapter_dicts(target)
            for table_name, table in _adapter_dicts(layer).items():
                if name in table and table_name in target_tables:
                    target_tables[table_name][name] = table[name]
        else:
            parent_path, _, child = path.rpartition(".")
            parent = live.base_model.model.get_submodule(parent_path) if parent_path else live.base_model.model
            setattr(parent, child, layer)
    live.peft_config[name] = built.peft_config[name]


class TimeSlices:
    """Lets a background thread run only while the decoding loop opens the gate; it pauses at its next Python call otherwise."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()  # open while nothing decodes

    def hook(self, frame: Any, event: str, arg: Any) -> None:
        if not self.gate.is_set():
            self.gate.wait()

    def give(self, seconds: float) -> None:
        """Called by the decoding loop between steps: the background thread runs for about `seconds`."""
        self.gate.set()
        time.sleep(seconds)
        self.gate.clear()

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.clear()


class BackgroundLoader:
    """Builds adapters, each in a thread that runs in the slices the decoding loop gives it."""

    def __init__(self) -> None:
        self.slices = TimeSlices()
        self.finished: list[tuple[str, Prepared | None, BaseException | None]] = []
        self._lock = threading.Lock()
        self.busy = 0

    def start(self, name: str, build: Callable[[], Prepared]) -> None:
        def run() -> None:
            sys.setprofile(self.slices.hook)  # this thread only: pause whenever the gate is shut
            try:
                prepared, error = build(), None
            except BaseException as caught:  # handed to the loop, which answers the request with it
                prepared, error = None, caught
            finally:
                sys.setprofile(None)
            with self._lock:
                self.finished.append((name, prepared, error))
                self.busy -= 1

        with self._lock:
            self.busy += 1
        threading.Thread(target=run, name="peftlab-adapter-loader", daemon=True).start()

    def take_finished(self) -> list[tuple[str, Prepared | None, BaseException | None]]:
        with self._lock:
            done, self.finished = self.finished, []
        return done


class AdapterPool:
    """Owns which adapters are served: ready, load (built in the loop's slices), install, make room, unload.

    The adapters named at start-up (and the base) are pinned: never evicted. `--max-adapters` bounds the others, those
    loaded while serving, counting one still unloading (its weights are held until its rows end). Every method that a
    request handler calls takes `lock`, the scheduler's condition, and wakes its loop; the loop calls `install_finished`
    and `unload_finished` between two steps, when no step runs.
    """

    def __init__(self, engine: Any, lock: threading.Condition, adapter_dir: str | Path | None = None,
                 max_adapters: int | None = None):
        self.engine = engine
        self.lock = lock
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None
        self.max_adapters = max_adapters
        self.pinned = frozenset(engine.models)
        reserved_adapter_names()  # built now (a second of imports), not under the lock at the first load
        self.loader = BackgroundLoader()
        self.loading: dict[str, Future] = {}
        self.unloading: dict[str, Future] = {}
        self.last_used: dict[str, float] = {}

    def serves(self, name: str) -> bool:
        return name in self.engine.models and name not in self.unloading

    def touch(self, name: str) -> None:
        self.last_used[name] = time.monotonic()

    def has_work(self) -> bool:
        return bool(self.unloading or self.loader.finished)

    def ready(self, model: str) -> Future | None:
        """None when `model` is served; a future that completes once it is loaded from --adapter-dir; KeyError when unknown."""
        with self.lock:
            if model in self.unloading:
                raise KeyError(model)
            if model in self.engine.models:
                self.touch(model)
                return None
            if model in self.loading:
                return self.loading[model]
        folder = self.adapter_dir / model if self.adapter_dir and ADAPTER_NAME.fullmatch(model) else None
        if folder is None or not folder.is_dir():
            raise KeyError(model)
        return self.load(model, str(folder))

    def load(self, name: str, path: str) -> Future:
        """Start loading an adapter; the future gives its ServedModel, or the PeftlabError/Busy that stopped it."""
        future: Future = Future()
        with self.lock:
            try:
                check_adapter_name(name, {**self.engine.models, **self.loading})
            except PeftlabError as refused:
                future.set_exception(refused)
                return future
            self.loading[name] = future
            self.loader.start(name, lambda: self.engine.prepare_adapter(name, path))
            self.lock.notify()
        return future

    def unload(self, name: str) -> Future:
        """Stop serving adapter `name`: new requests for it are refused at once, its running rows finish, then its
        weights are freed. The future fails with KeyError for a name not served, PeftlabError for the base."""
        future: Future = Future()
        with self.lock:
            if name == self.engine.base_name:
                future.set_exception(PeftlabError(f"'{name}' is the base model; only adapters can be unloaded"))
            elif not self.serves(name):
                future.set_exception(KeyError(name))
            else:
                self.unloading[name] = future
                self.lock.notify()
        return future

    def install_finished(self, in_use: Callable[[str], bool]) -> None:
        """Serve the adapters built since the last step, making room for each (`in_use`: a request waits or runs for it)."""
        for name, prepared, error in self.loader.take_finished():
            with self.lock:  # submit() checks names under the same lock: no job slips in for an adapter being evicted
                future = self.loading.pop(name)
                try:
                    if error is not None:
                        raise error
                    self._make_room(in_use)
                    future.set_result(self.engine.install(prepared))
                    self.touch(name)
                except (PeftlabError, Busy) as refused:
                    future.set_exception(refused)
                except Exception as failed:  # a misfit the method's loader did not name: still the request's answer
                    future.set_exception(PeftlabError(f"adapter {name} failed to load: {type(failed).__name__}: {failed}"))

    def _make_room(self, in_use: Callable[[str], bool]) -> None:
        """With --max-adapters reached, unload the unpinned adapter used least recently that no request needs now."""
        if self.max_adapters is None:
            return
        held = [name for name in self.engine.models if name not in self.pinned]
        if len(held) < self.max_adapters:
            return
        idle = [name for name in held if name not in self.unloading and not in_use(name)]
        if len(held) - len(idle) >= self.max_adapters:
            raise Busy(f"all {self.max_adapters} adapter places (--max-adapters) are in use")
        for victim in sorted(idle, key=lambda name: self.last_used.get(name, 0.0))[:len(held) - self.max_adapters + 1]:
            self.engine.remove_adapter(victim)
            log.info("unloaded adapter %s (least recently used) to make room", victim)

    def unload_finished(self, running: Callable[[str], bool], drop_waiting: Callable[[str], None]) -> None:
        """Free each adapter being unloaded whose rows have all ended; `drop_waiting` answers its queued requests."""
        for name, future in list(self.unloading.items()):
            if running(name):
                continue  # its rows finish first
            with self.lock:
                del self.unloading[name]
                drop_waiting(name)
                try:
                    if name in self.engine.models:  # not evicted meanwhile
                        self.engine.remove_adapter(name)
                    future.set_result(True)
                except Exception as error:  # answered, never left hanging
                    log.exception("unloading %s failed", name)
                    future.set_exception(PeftlabError(f"unloading {name} failed: {type(error).__name__}: {error}"))
