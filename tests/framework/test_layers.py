"""The import layering the README's code map states: every ``mmh`` package imports only the packages listed for it
(module-level and lazy imports alike), and ``mmh_ext`` imports nothing of ``mmh``."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each top-level piece of ``mmh`` may import (besides itself): the README's "Where things are".
ALLOWED = {
    "utils": set(),
    "_optional": set(),
    "losses": set(),
    "config": {"utils", "methods"},  # load_config reads the method registry's declared defaults (a lazy import)
    "data": {"utils", "_optional"},
    "models": {"utils", "_optional"},
    "train": {"config", "data", "models", "utils", "_optional"},
    "methods": {"config", "data", "losses", "models", "train", "utils", "_optional"},
    "evaluation": {"data", "models", "utils", "_optional"},
    "runner": {"config", "data", "evaluation", "methods", "models", "train", "utils", "_optional"},
    "export": {"config", "data", "models", "runner", "train", "utils", "_optional"},
    "benchmarks": {"config", "data", "evaluation", "methods", "models", "runner", "train", "utils", "_optional"},
    "cli": {"benchmarks", "config", "data", "evaluation", "export", "methods", "models", "runner", "train", "utils",
            "_optional"},
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
                base = package[:len(package) - (node.level - 1)]
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


def test_mmh_imports_follow_the_layers():
    assert layer_violations(ROOT / "python" / "mmh") == []


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
