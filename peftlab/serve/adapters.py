"""Adapters loaded while serving: built off to the side, in time slices between decoding steps, then installed at once.

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
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


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
    method: Any  # the peftlab Method (servable, mixable, name)
    model: Any


def _adapter_dicts(layer: Any) -> dict[str, Any]:
    """Every per-adapter table of a peft layer (lora_A, scaling, r, ...), by attribute name."""
    tables = {name: value for name, value in vars(layer).items() if isinstance(value, dict)}
    tables.update(layer._modules)  # ModuleDicts / ParameterDicts of the adapter weights
    return tables


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
                if hasattr(table, "__contains__") and name in table and table_name in target_tables:
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
