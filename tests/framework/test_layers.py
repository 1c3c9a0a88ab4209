"""The import layering the README's code map states: every ``mmh`` package imports only the packages listed for it
(module-level and lazy imports alike), no module of ``mmh`` reaches itself through its imports (no import cycle), and
``mmh_ext`` imports nothing of ``mmh``."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each top-level piece of ``mmh`` may import (besides itself): the README's "Where things are".
ALLOWED = {
    "utils": set(),
    "_optional": set(),
    "losses": set(),
    "config": {"utils"},
    "data": {"utils", "_optional"},
    "models": {"utils", "_optional"},
    "train": {"config", "data", "models", "utils", "_optional"},
    "methods": {"config", "data", "losses", "models", "train", "utils", "_optional"},
    "evaluation": {"data", "models", "utils", "_optional"},
    "runner": {"config", "data", "evaluation", "methods", "models", "train", "utils", "_optional"},
    "export": {"config", "data", "models", "runner", "train", "utils", "_optional"},
    "benchmarks": {"config", "data", "evaluation", "methods", "models", "runner", "train", "utils", "_optional"},
    "cli": {
        "benchmarks",
        "config",
        "data",
        "evaluation",
        "export",
        "methods",
        "models",
        "runner",
        "train",
        "utils",
        "_optional",
    },
    "__init__": set(),
}


def _piece(path: Path, pkg_root: Path) -> str:
    parts = path.relative_to(pkg_root).with_suffix("").parts
    return parts[0]


def _imported_pieces(path: Path, pkg_root: Path, top: str) -> set[tuple[str, int]]:
    """(top-level piece of ``top`` imported, line) for every import in ``path``, relative ones resolved."""
    package = list(path.relative_to(pkg_root.parent).with_suffix("").parts)[:-1]  # the module's package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = base + (node.module.split(".") if node.module else [])
                targets = [mod + [a.name] for a in node.names] if not node.module else [mod]
            elif node.module:
                targets = [node.module.split(".")]
        for t in targets:
            if t[0] == top and len(t) > 1:
                found.add((t[1], node.lineno))
    return found


def layer_violations(pkg_root: Path) -> list[str]:
    bad = []
    for path in sorted(pkg_root.rglob("*.py")):
        piece = _piece(path, pkg_root)
        allowed = ALLOWED.get(piece)
        if allowed is None:
            bad.append(f"{path}: {piece!r} is not in the layer table")
            continue
        for target, line in sorted(_imported_pieces(path, pkg_root, "mmh")):
            if target != piece and target not in allowed:
                bad.append(f"{path.relative_to(pkg_root.parent)}:{line}: mmh.{piece} imports mmh.{target}")
    return bad


def _module_name(path: Path, pkg_root: Path) -> str:
    parts = path.relative_to(pkg_root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg_root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over every module of the package at ``pkg_root`` (a package is its
    ``__init__``), from module-level and function-level imports alike, relative ones resolved. ``from p import x`` is an
    edge to the submodule ``p.x`` when there is one, else to ``p``; a name that is no module of the package counts as
    its nearest enclosing one. Importing ``p.q`` is an edge to ``p`` too (Python runs ``p/__init__`` first), except
    where ``p`` encloses the importing module: that package is already being imported, so a package that imports its
    own submodules is no cycle."""
    paths = {_module_name(p, pkg_root): p for p in sorted(pkg_root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in paths.items():
        package = list(path.relative_to(pkg_root.parent).with_suffix("").parts)[:-1]
        own = {".".join(package[:i]) for i in range(1, len(package) + 1)}  # the packages enclosing this module
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    mod = ".".join(base + (node.module.split(".") if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in paths else mod for a in node.names]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                parts = target.split(".") if target else []
                for hit in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):  # p, p.q, ..., the module
                    if hit in paths and hit != name and hit not in own:
                        edges[hit] = min(edges.get(hit, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def _shortest_path(edges: dict[str, set[str]], src: str, dst: str) -> list[str] | None:
    """The shortest ``[src, ..., dst]`` of at least one edge (breadth first, successors in name order), or None."""
    parent: dict[str, str] = {}
    queue = deque([src])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges.get(node, ())):
            if nxt == dst:
                path = [node, dst]
                while path[0] != src:
                    path.insert(0, parent[path[0]])
                return path
            if nxt not in parent and nxt != src:
                parent[nxt] = node
                queue.append(nxt)
    return None


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles of ``graph``, each ``[m0, m1, ..., m0]``: the shortest cycle left (the first in name order
    among equals), then its closing edge set aside, until none is left. Every cycle of the graph goes through an edge
    of a listed one, so an empty list means the graph has no cycle."""
    edges = {m: set(targets) for m, targets in graph.items()}
    found: list[list[str]] = []
    while True:
        best: list[str] | None = None
        for start in sorted(edges):
            path = _shortest_path(edges, start, start)
            if path is not None and (best is None or len(path) < len(best)):
                best = path
        if best is None:
            return found
        found.append(best)
        edges[best[-2]].discard(best[-1])


def show_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    """``a (line 3) -> b (line 9) -> a``: each module with the line of its import of the next."""
    return " -> ".join(f"{m} (line {graph[m][n]})" for m, n in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_mmh_imports_follow_the_layers():
    assert layer_violations(ROOT / "python" / "mmh") == []


def test_mmh_has_no_import_cycle():
    graph = import_graph(ROOT / "python" / "mmh")
    assert "mmh.methods.base" in graph and "mmh.config" in graph["mmh.runner"]  # the graph is the package's
    cycles = [show_cycle(graph, c) for c in import_cycles(graph)]
    assert not cycles, "import cycles in python/mmh:\n" + "\n".join(cycles)


def test_mmh_ext_imports_nothing_of_mmh():
    hits = []
    for p in sorted((ROOT / "mmh_ext").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hits += [f"{p}:{node.lineno}" for n in names if n == "mmh" or n.startswith("mmh.")]
    assert hits == []


@pytest.mark.parametrize("planted", ["from ..runner import run_experiment", "from mmh.methods import rad"])
def test_a_planted_upward_import_is_caught(tmp_path, planted):
    pkg = tmp_path / "mmh"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "trainer.py").write_text(f"def f():\n    {planted}\n")
    assert len(layer_violations(pkg)) == 1


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "mmh"


#: The two cycles of the shape the package once had: ``base`` <-> ``registry`` through a function-level import, and
#: ``config`` -> ``methods`` -> ``train`` -> ``config`` (``methods.base`` imports ``train.stage``, which runs
#: ``train/__init__``, which imports the trainer, which imports ``config``).
CYCLIC = {
    "mmh/__init__.py": "",
    "mmh/utils.py": "X = 1\n",
    "mmh/config.py": "from .utils import X\n\n\ndef defaults():\n    from .methods.registry import sections\n",
    "mmh/methods/__init__.py": "from . import rad\nfrom .registry import sections\n",
    "mmh/methods/base.py": "from ..train.stage import Batch\n\n\ndef loss_cfg():\n    from .registry import sections\n",
    "mmh/methods/registry.py": "from .base import Batch\nsections = {}\n",
    "mmh/methods/rad.py": "from . import base\nfrom .registry import sections\nimport mmh.utils\n",
    "mmh/train/__init__.py": "from .trainer import fit\n",
    "mmh/train/stage.py": "Batch = dict\n",
    "mmh/train/trainer.py": "from ..config import X\n",
}


def test_both_planted_cycles_are_found_and_shown(tmp_path):
    graph = import_graph(_tree(tmp_path, CYCLIC))
    cycles = import_cycles(graph)
    assert cycles == [
        ["mmh.methods.base", "mmh.methods.registry", "mmh.methods.base"],
        [
            "mmh.config",
            "mmh.methods",
            "mmh.methods.rad",
            "mmh.methods.base",
            "mmh.train",
            "mmh.train.trainer",
            "mmh.config",
        ],
    ]
    assert show_cycle(graph, cycles[0]) == (
        "mmh.methods.base (line 5) -> mmh.methods.registry (line 1) -> mmh.methods.base"
    )


def test_without_the_back_edges_the_planted_package_has_no_cycle(tmp_path):
    """A package importing its own submodules, ``from . import base`` and ``import mmh.utils`` are no cycle."""
    acyclic = {
        **CYCLIC,
        "mmh/config.py": "from .utils import X\n",
        "mmh/methods/base.py": "from ..train.stage import Batch\n",
    }
    graph = import_graph(_tree(tmp_path, acyclic))
    assert graph["mmh.methods.rad"] == {"mmh.methods.base": 1, "mmh.methods.registry": 2, "mmh.utils": 3}
    assert graph["mmh.methods.base"] == {"mmh.train": 1, "mmh.train.stage": 1}  # the package runs first
    assert import_cycles(graph) == []
