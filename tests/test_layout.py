"""Architecture rules of the package, checked on its source: no import cycle, one owner per file format,
no peft_type string comparisons outside the methods."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "peftlab"
FORMAT_MODULE = "peftlab.artifacts"
FORMAT_FILES = ("adapter_config.json", "peftlab.json")
FORMAT_NAMES = ("ADAPTER_CONFIG", "RUN_INFO")  # artifacts' names for those files
PEFT_TYPES = ("LORA", "ADALORA", "LOHA", "LOKR", "IA3", "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "LN_TUNING", "BOTTLENECK")


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return found


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """peftlab modules `name` imports anywhere (module level or inside functions)."""
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file() else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from X import Y` imports module X.Y when Y is one, else X itself
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {target for target in targets if target in known and target != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_cycle_detection_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    trees = modules()
    graph = {name: imported(name, tree, set(trees)) for name, tree in trees.items()}
    assert graph["peftlab.methods.saved"] >= {"peftlab.artifacts", "peftlab.methods.base"}  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def test_only_the_format_module_names_adapter_config_and_peftlab_json():
    offenders = []
    for name, tree in modules().items():
        if name == FORMAT_MODULE:
            continue
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                offenders += [f"{name}:{node.lineno} {file}" for file in FORMAT_FILES if file in node.value]
            if isinstance(node, ast.ImportFrom) and node.module == FORMAT_MODULE:
                offenders += [f"{name}:{node.lineno} imports {a.name}" for a in node.names if a.name in FORMAT_NAMES]
            if isinstance(node, ast.Attribute) and node.attr in FORMAT_NAMES:
                offenders.append(f"{name}:{node.lineno} uses {node.attr}")
    assert not offenders, offenders


def test_no_peft_type_comparison_outside_the_methods():
    offenders = []
    for name, tree in modules().items():
        if name.startswith("peftlab.methods"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            text = ast.unparse(node)
            strings = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            if "peft_type" in text or any(s in PEFT_TYPES for s in strings):
                offenders.append(f"{name}:{node.lineno} {text}")
    assert not offenders, offenders


def test_report_imports_nothing_but_its_own_modules_atomic_and_errors():
    """report draws results records; what it shows of a recipe (e.g. compare's learning-rate bracket) travels in them."""
    trees = modules()
    allowed = {"peftlab.atomic", "peftlab.errors"}
    offenders = {name: sorted(found) for name, tree in trees.items() if name.startswith("peftlab.report")
                 if (found := {m for m in imported(name, tree, set(trees)) if not m.startswith("peftlab.report") and m not in allowed})}
    assert not offenders, offenders


MAX_MODULE_LINES, MAX_CLASS_LINES = 400, 200  # small modules a newcomer can hold in their head


def test_no_module_over_400_lines_and_no_class_over_200():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            offenders.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                offenders.append(f"{where}:{node.lineno} class {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not offenders, offenders


def _package_of(module: str, packages: list[str]) -> str:
    """The innermost package holding `module`, or the module itself when it is a top-level file (config, atomic...)."""
    return next((p for p in packages if module == p or module.startswith(p + ".")), module)


def test_each_package_says_what_it_owns_and_names_every_package_it_imports():
    """Line 1 of each package's docstring: "Owns ..."; line 2: "May import ...", naming (as a word) every part of peftlab
    the package imports, unless it may import any."""
    trees = modules()
    packages = sorted((name for name in trees if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()
                       and name != "peftlab"), key=len, reverse=True)
    offenders = []
    for package in packages:
        lines = (ast.get_docstring(trees[package]) or "").splitlines()
        if len(lines) < 2 or not lines[0].startswith("Owns") or not lines[1].startswith("May import"):
            offenders.append(f"{package}: docstring lines 1-2 are not 'Owns ...' / 'May import ...'")
            continue
        if " any " in lines[1]:
            continue
        named = set(re.findall(r"[a-z_]+", lines[1].split(";")[0].split(":")[0]))
        for module, tree in trees.items():
            if _package_of(module, packages) != package:
                continue
            for target in imported(module, tree, set(trees)):
                part, own = _package_of(target, packages).removeprefix("peftlab."), package.removeprefix("peftlab.")
                if part != own and not part.startswith(own + ".") and not set(part.split(".")) & named:
                    offenders.append(f"{package}: {module} imports {target}, not named in {lines[1]!r}")
    assert not offenders, offenders


DEVICE_OWNER = "peftlab.models.device"
# what picks a device or asks what the machine has: only the owner may (the rest asks it, or follows a model's .device)
DEVICE_QUERIES = ("torch.cuda.is_available", "torch.cuda.device_count", "torch.cuda.is_bf16_supported", "torch.backends.mps",
                  "torch.cuda.max_memory_allocated", "_is_mkldnn_bf16_supported")
DEVICE_NAMES = re.compile(r"^(cuda|mps)(:\d+)?$")


def device_picking(name: str, tree: ast.Module) -> list[str]:
    """Where a module asks for a device by name (`.to("cuda")`, `torch.device("mps")`, `device="cuda:1"`) or queries one."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and any(ast.unparse(node).endswith(query) for query in DEVICE_QUERIES):
            found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DEVICE_NAMES.match(node.value):
            found.append(f"{name}:{node.lineno} {node.value!r}")
    return found


def test_the_device_check_finds_device_picking():
    tree = ast.parse('import torch\nif torch.cuda.is_available():\n    model.to("cuda:1")\nx = torch.backends.mps.is_available()\n')
    assert [line.split(" ")[1] for line in device_picking("m", tree)] == ["torch.cuda.is_available", "'cuda:1'", "torch.backends.mps"]


def test_only_the_device_owner_picks_a_device():
    offenders = [line for name, tree in modules().items() if name != DEVICE_OWNER for line in device_picking(name, tree)]
    assert not offenders, offenders
