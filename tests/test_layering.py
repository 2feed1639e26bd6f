"""Dependencies between the four parts point one way, lazy imports and `import_module` strings included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PARTS = ("runtime", "benchmarks", "export", "train")
#: What each part may import from the others. train/ converts models to time them (cifar-tune's
#: budget, candidates), so it may use export/; export/ never imports train/, so there is no cycle.
ALLOWED = {
    "runtime": set(),
    "benchmarks": {"runtime"},
    "export": {"runtime"},
    "train": {"runtime", "export"},
}


def imported_modules(source: Path) -> set[str]:
    """Every module `source` imports: at the top, inside functions, or by name through `import_module("...")`."""
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                imported.add(str(node.args[0].value))
    return imported


def part_edges(repo: Path = REPO) -> dict[tuple[str, str], list[str]]:
    """(from part, to part) -> the files that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for part in PARTS:
        for source in sorted((repo / part).rglob("*.py")):
            for module in imported_modules(source):
                pieces = module.split(".")
                target = pieces[1] if pieces[0] == "cifar_edge" and len(pieces) > 1 else None
                if target in PARTS and target != part:
                    edges.setdefault((part, target), []).append(f"{source.relative_to(repo)} imports {module}")
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for start, end in edges:
        graph.setdefault(start, set()).add(end)

    def visit(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        for following in sorted(graph.get(node, ())):
            found = visit(following, path + [node])
            if found:
                return found
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def test_imports_between_parts_follow_the_allowed_edges():
    edges = part_edges()
    wrong = [why for (start, end), whys in edges.items() if end not in ALLOWED[start] for why in whys]
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_parts_import_each_other_in_no_cycle():
    assert find_cycle(part_edges()) is None


def test_the_checks_see_lazy_imports_and_import_module_strings(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "benchmarks" / "a.py").write_text("def f():\n    from cifar_edge.train.report import x\n")
    (tmp_path / "train" / "b.py").write_text("import importlib\n\ndef g():\n    importlib.import_module('cifar_edge.benchmarks.bench')\n")
    edges = part_edges(tmp_path)
    assert set(edges) == {("benchmarks", "train"), ("train", "benchmarks")}
    assert find_cycle(edges) in (["benchmarks", "train", "benchmarks"], ["train", "benchmarks", "train"])


def test_benchmarks_import_without_tensorflow_keras_or_matplotlib():
    # A Pi with the runtime extra alone: every benchmarks module must import there.
    modules = [f"cifar_edge.benchmarks.{p.stem}" for p in sorted((REPO / "benchmarks").glob("*.py")) if p.stem != "__init__"]
    code = (
        "import sys\n"
        "for blocked in ('tensorflow', 'keras', 'matplotlib'):\n"
        "    sys.modules[blocked] = None\n"
        f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
