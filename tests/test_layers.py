"""The core's import graph: one layer order, no cycles, attacks importable without the zoo (DESIGN.md §1).

Data flows one way: base modules → architectures → attacks → metrics/analyses/defences → the zoo and
its trainers (adversarial training runs attacks) → cached runs and plotting. The graph is read from
the sources (every ``import`` in a module, at any depth, counts), not from what happens to be loaded.
"""
from __future__ import annotations

import ast
import subprocess
import sys

from featadv_core import repro

# lowest first; a module may import only modules of its own rank or below (prefixes: longest match wins)
RANKS = {
    "featadv_core": 0, "featadv_core.devices": 0, "featadv_core.data": 0, "featadv_core.images": 0,
    "featadv_core.features": 0, "featadv_core.labels": 0, "featadv_core.repro": 0, "featadv_core.pairs": 0,
    "featadv_core.distributed": 0,
    "featadv_core.models": 1, "featadv_core.models.architectures": 1, "featadv_core.models.adain": 1,
    "featadv_core.attacks": 2,
    "featadv_core.metrics": 3, "featadv_core.analysis": 3, "featadv_core.defenses": 3,
    "featadv_core.models.train": 4, "featadv_core.models.adversarial_data": 4,
    "featadv_core.models.adversarial_training": 4, "featadv_core.models.atda": 4, "featadv_core.models.trades": 4,
    "featadv_core.models.decoder_training": 4, "featadv_core.models.decoder_evaluation": 4,
    "featadv_core.models.zoo": 4, "featadv_core.models.retrain": 4,
    "featadv_core.runs": 5, "featadv_core.plotting": 5, "featadv_core.reference": 5,
    "featadv_core.claims": 5, "featadv_core.run_notebook": 5,  # the book's side: nothing in the core imports them
    "featadv_core.cost": 0,  # counts passes through any model: torch only
    "featadv_core.comparison": 6, "featadv_core.comparison_claims": 6,  # chapter 5: every attack and measure, over runs
    "featadv_core.comparison_study": 6,  # chapter 5: one dataset's study from zoo ids, and its tables
}


def _modules() -> dict[str, set[str]]:
    root = repro._PACKAGE_DIR
    graph = {}
    for file in sorted(root.rglob("*.py")):
        parts = [repro._PACKAGE, *file.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        graph[name] = repro._imported_modules(name, file) - {name}
    return graph


def _rank(module: str) -> int:
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)
    return RANKS[best]


def test_no_module_imports_a_higher_layer():
    upward = [(a, b) for a, deps in _modules().items() for b in deps if _rank(b) > _rank(a)]
    assert upward == [], f"imports against the layer order: {upward}"


def test_the_import_graph_has_no_cycles():
    graph = _modules()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], f"import cycles: {cycles}"


def test_importing_the_attacks_loads_neither_the_zoo_nor_a_trainer():
    code = ("import sys, featadv_core.attacks\n"
            "print(sorted(m for m in sys.modules if m.startswith('featadv_core.models.')"
            " and not m.startswith(('featadv_core.models.architectures', 'featadv_core.models.adain'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_posix_only_module_at_import_time():
    """``fcntl`` does not exist on Windows: the zoo's file lock imports it only where it runs."""
    for file in repro._PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(file.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top for a in n.names} | {n.module for n in top if isinstance(n, ast.ImportFrom)}
        assert "fcntl" not in names and "msvcrt" not in names, file


def test_one_label_validator():
    """Label checks go through labels.check_labels: no module keeps a private copy."""
    copies = [f"{file.name}: {node.name}" for file in repro._PACKAGE_DIR.rglob("*.py")
              for node in ast.walk(ast.parse(file.read_text()))
              if isinstance(node, ast.FunctionDef) and node.name in ("_check_labels", "_check_target")]
    assert copies == []
