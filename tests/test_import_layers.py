"""The arrows point one way: the library below, the engine above, methods plugging into both through
vreid.methods.base.

The rule checked here. A node is a subpackage of vreid (vreid.engine, vreid.eval, vreid.unsup, ...), except
that `vreid.methods` itself (its __init__) and `vreid.methods.base` form the contract node "vreid.methods.base":
what the engine may see of methods. The concrete methods (vreid.methods.bot, ...) are the node "vreid.methods".
Every other node is library, below the contract; above it, in order, come the engine, the methods and the front
ends (LAYERS). An edge is an import at module level: it runs when the module is imported, so a cycle of them can
leave a module half initialised. Importing a.b.c also runs the __init__ of a.b, so it counts as an import of a.b.
Imports under `if TYPE_CHECKING:` never run and do not count. The graph of module-level edges must have no cycle,
and no edge may point to a higher layer.

Imports inside functions run late, once every module is loaded; they may point against that order (close a cycle)
only where DEFERRED_UPWARD lists the pair with the reason. Registries that import their plug-ins on first use
(vreid.registry) do it by name, not by an import statement, so a runtime check covers them: importing the whole
engine loads nothing of a higher layer.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import vreid

SRC = Path(vreid.__file__).parent
CONTRACT = "vreid.methods.base"
CONTRACT_MODULES = {"vreid.methods", "vreid.methods.base"}
#: The layers above the library, lowest first (a node not named here is library, layer 0).
LAYERS = [[CONTRACT], ["vreid.engine"], ["vreid.methods"],
          ["vreid.cli", "vreid.convert", "vreid.demo", "vreid.viz", "vreid.__main__"]]

#: (from node, to node) -> why an import inside a function may point up the module-level order.
DEFERRED_UPWARD = {
    ("vreid.config", "vreid.data"): "the schema checks names against the layout registry when a config is built",
    ("vreid.config", "vreid.engine"): "the schema checks names against the optimizer and schedule registries",
    ("vreid.config", "vreid.eval"): "the schema checks names against the protocol and metric registries",
    ("vreid.config", "vreid.methods.base"): "the schema checks model.name against the method registry",
    ("vreid.config", "vreid.rerank"): "the schema checks names against the re-ranker registry",
    ("vreid.engine", "vreid.convert"): "the error for a foreign weights file names the converters that read it",
    ("vreid.eval", "vreid.rerank"): "evaluate() looks up the re-ranker it is asked for; re-rankers build on eval's "
                                    "distances (left: the registry could move down into vreid.eval)",
}


@dataclass(frozen=True)
class Import:
    """One import statement of a vreid module: who imports what, and whether it runs at module level."""

    source: str
    target: str
    module_level: bool


def module_name(path: Path) -> str:
    """vreid/engine/hooks.py -> vreid.engine.hooks; a package's __init__.py is the package."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str:
    """The layer a module belongs to: its vreid subpackage, or the methods contract."""
    if module in CONTRACT_MODULES:
        return CONTRACT
    return ".".join(module.split(".")[:2])


def layer_of(node: str) -> int:
    """0 for the library, then 1, 2, ... up LAYERS."""
    return next((i + 1 for i, names in enumerate(LAYERS) if node in names), 0)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement loads, with the parent packages it runs on the way."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level:  # relative: resolve against the importing module's package
        package = module.split(".")[: len(module.split(".")) - node.level + is_package]
        names = [".".join(package + ([node.module] if node.module else []))]
    else:
        names = [node.module or ""]
    loaded = set()
    for name in names:
        parts = name.split(".")
        loaded.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return sorted(n for n in loaded if n.startswith("vreid."))


def imports_of(path: Path) -> list[Import]:
    """Every import of a vreid module in one file, marked module-level or not (TYPE_CHECKING blocks skipped)."""
    module, found = module_name(path), []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse, module_level)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _imported_names(child, module, path.name == "__init__.py"):
                    found.append(Import(module, target, module_level))
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, module_level and not in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(SRC.rglob("*.py")) for imp in imports_of(path)]


Graph = dict[str, dict[str, set[str]]]


def layer_graph(imports: list[Import]) -> Graph:
    """node -> node -> the 'module -> module' imports behind that edge (module-level imports only)."""
    graph: Graph = defaultdict(lambda: defaultdict(set))
    for imp in imports:
        a, b = node_of(imp.source), node_of(imp.target)
        if imp.module_level and a != b:
            graph[a][b].add(f"{imp.source} -> {imp.target}")
    return graph


def path_between(graph: Graph, start: str, goal: str) -> list[str] | None:
    """A shortest node path start -> ... -> goal (breadth first), or None."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for succ in sorted(graph.get(node, {})):
                if succ not in previous:
                    previous[succ] = node
                    nxt.append(succ)
        frontier = nxt
    if goal not in previous:
        return None
    path, node = [], goal
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each edge a -> b that b can get back from; each reported once (as a node set)."""
    found, seen = [], set()
    for a in sorted(graph):
        for b in sorted(graph[a]):
            back = path_between(graph, b, a)
            if back is not None and frozenset(back) not in seen:
                seen.add(frozenset(back))
                found.append([a, *back])
    return found


def describe(cycle: list[str], graph: Graph) -> str:
    """'a -> b -> a' with, under each arrow, the first module import that makes it."""
    lines = [" -> ".join(cycle)]
    lines += [f"    {a} -> {b}: {min(graph[a][b])}" for a, b in zip(cycle, cycle[1:])]
    return "\n".join(lines)


def test_module_level_imports_have_no_cycle_between_layers():
    graph = layer_graph(all_imports())
    found = cycles(graph)
    assert not found, "import cycles between vreid layers:\n" + "\n".join(describe(c, graph) for c in found)


def test_module_level_imports_point_down_the_layers():
    graph = layer_graph(all_imports())
    upward = [f"  {a} -> {b}: {', '.join(sorted(graph[a][b]))}" for a in sorted(graph) for b in sorted(graph[a])
              if layer_of(b) > layer_of(a)]
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


def test_imports_inside_functions_point_up_only_where_listed():
    imports = all_imports()
    graph = layer_graph(imports)
    upward = defaultdict(list)
    for imp in imports:
        a, b = node_of(imp.source), node_of(imp.target)
        if not imp.module_level and a != b and path_between(graph, b, a) is not None:
            upward[(a, b)].append(f"{imp.source} -> {imp.target}")
    unlisted = {pair: where for pair, where in upward.items() if pair not in DEFERRED_UPWARD}
    assert not unlisted, "imports inside functions that close a cycle:\n" + "\n".join(
        f"  {a} -> {b}: {', '.join(where)}" for (a, b), where in sorted(unlisted.items()))


def test_importing_the_engine_loads_no_higher_layer():
    """At run time, dynamic imports included: the methods load on the first registry lookup, not with the engine."""
    code = ("import importlib, pkgutil, sys, vreid.engine as e\n"
            "for m in pkgutil.iter_modules(e.__path__): importlib.import_module(f'vreid.engine.{m.name}')\n"
            "print(*sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    above = sorted(m for m in loaded if m.startswith("vreid.") and layer_of(node_of(m)) > layer_of("vreid.engine"))
    assert not above, f"importing vreid.engine loads: {', '.join(above)}"


def test_the_checker_finds_a_cycle():
    """The checker itself: a two-layer loop is reported, a one-way chain is not."""
    loop = [Import("vreid.eval.metrics", "vreid.rerank.knn", True), Import("vreid.rerank.knn", "vreid.eval", True)]
    chain = [Import("vreid.engine.trainer", "vreid.methods", True), Import("vreid.methods.bot", "vreid.engine", True)]
    assert cycles(layer_graph(loop)) == [["vreid.eval", "vreid.rerank", "vreid.eval"]]
    assert cycles(layer_graph(chain)) == []
    assert layer_of("vreid.unsup") < layer_of(CONTRACT) < layer_of("vreid.engine") < layer_of("vreid.methods")
