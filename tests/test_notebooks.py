"""Static checks of the book's notebooks (their execution is the smoke run: `make smoke`)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_parameters_cell(path):
    """The first code cell is tagged `parameters`, holds literal assignments only, has `smoke`."""
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert code and "parameters" in code[0].get("metadata", {}).get("tags", []), \
        "the first code cell must be tagged 'parameters' (papermill ignores injected values otherwise)"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
    tree = ast.parse("".join(code[0]["source"]))
    names = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises if not a literal
    assert names.get("smoke") is False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_without_outputs(path):
    assert all(not c.get("outputs") for c in _cells(path) if c["cell_type"] == "code")


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert str(path.relative_to(ROOT).with_suffix("")) in toc, path
