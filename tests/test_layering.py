"""The package's import structure: no import cycles, and no module imports one from a higher layer.

Every import statement in lstm_mt/ counts, including those inside functions and under
``if TYPE_CHECKING:``. The layers below are the intended order, bottom first: a module may
import from its own layer or lower ones. A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_mt"

# Bottom first. A name covers the module and, for a package, everything in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        ("lstm_mt", "errors", "vocab", "files", "ranges", "configuring", "hydra_app", "profiling", "memory"),
    ),
    ("lstm", ("lstm", "cell")),
    ("attention", ("attention",)),
    ("encoder/decoder", ("encoder", "decoder")),
    ("model", ("model",)),
    ("tokenizer", ("tokenizer",)),
    ("data", ("data",)),
    (
        "training parts, search",
        ("config", "optim", "loss", "runtime", "metrics", "topk", "search", "ensemble", "precision", "plotting"),
    ),
    ("checkpoint, run log", ("checkpoint", "runlog")),
    ("commands", ("translate", "evaluate", "train", "average")),
    ("applications", ("recipe", "inspection", "serve", "bench")),
    ("cli", ("cli", "__main__")),
]

# Cycles known and not yet broken; each entry must still exist (the test says when to drop it).
KNOWN_CYCLES: list[list[str]] = []


@dataclass(frozen=True)
class Import:
    """One ``import``/``from ... import`` of an lstm_mt module, where it is written."""

    importer: str
    imported: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """lstm_mt modules ``path`` imports; ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        relative = str(path.relative_to(PACKAGE.parent))
        found += [
            Import(name, target, relative, node.lineno) for target in targets if target.split(".")[0] == "lstm_mt"
        ]
    return found


def layer_of(module: str) -> int | None:
    """Index of ``module``'s layer in LAYERS (the longest matching name wins), or None."""
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(LAYERS):
        for short in names:
            full = "lstm_mt" if short == "lstm_mt" else f"lstm_mt.{short}"
            if module == full or (short != "lstm_mt" and module.startswith(full + ".")):
                if best is None or len(full) > best[1]:
                    best = (index, len(full))
    return None if best is None else best[0]


def import_graph() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def test_every_module_has_a_layer():
    unplaced = [name for name in all_modules() if layer_of(name) is None]
    assert not unplaced, f"give these modules a layer in tests/test_layering.py LAYERS: {', '.join(unplaced)}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for imp in import_graph():
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if low is not None and high is not None and high > low:
            upward.append(
                f"{imp.where()}: {imp.importer} (layer '{LAYERS[low][0]}') imports {imp.imported} "
                f"(higher layer '{LAYERS[high][0]}')"
            )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_there_are_no_import_cycles():
    graph = import_graph()
    edges: dict[str, set[str]] = {}
    for imp in graph:
        edges.setdefault(imp.importer, set()).add(imp.imported)
    cycles = find_cycles(edges)
    gone = [cycle for cycle in KNOWN_CYCLES if cycle not in cycles]
    assert not gone, f"no longer cycles, drop them from KNOWN_CYCLES: {gone}"
    messages = []
    for cycle in (cycle for cycle in cycles if cycle not in KNOWN_CYCLES):
        members = set(cycle)
        links = [
            f"{imp.where()} {imp.importer} -> {imp.imported}"
            for imp in graph
            if {imp.importer, imp.imported} <= members
        ]
        messages.append(f"cycle among {', '.join(cycle)}:\n  " + "\n  ".join(links))
    assert not messages, "import cycles:\n" + "\n".join(messages)


def test_the_checker_finds_cycles_and_upward_imports():
    """The checks themselves, on a made-up graph and on made-up modules."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]] and find_cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("lstm_mt.errors") == 0 and layer_of("lstm_mt.lstm.native") == layer_of("lstm_mt.cell")
    assert layer_of("lstm_mt.data.batching") == layer_of("lstm_mt.data") > layer_of("lstm_mt.tokenizer")
    assert layer_of("lstm_mt.cli") == len(LAYERS) - 1 and layer_of("lstm_mt.nowhere") is None
