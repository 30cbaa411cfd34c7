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


def _parameters(path) -> dict:
    """The notebook's parameters cell as a dict: the first code cell after the set-up cell."""
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert code and "find_spec(\"featadv_core\")" in "".join(code[0]["source"]), \
        "the first code cell installs featadv_core where it is missing (Colab)"
    assert "remove-cell" in code[0].get("metadata", {}).get("tags", [])
    assert len(code) > 1 and "parameters" in code[1].get("metadata", {}).get("tags", []), \
        "the second code cell must be tagged 'parameters' (papermill ignores injected values otherwise)"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
    names = {}
    for node in ast.parse("".join(code[1]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises if not a literal
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_parameters_cell(path):
    """A set-up cell, then the cell tagged `parameters`: literal assignments only, with `smoke`."""
    assert _parameters(path).get("smoke") is False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_paper_preset_names_only_real_parameters(path):
    """`<notebook>.paper.yaml` exists and sets only parameters of the notebook (a typo must fail:
    papermill would ignore it silently), each to a literal of a plausible type."""
    import yaml

    preset_path = path.with_suffix(".paper.yaml")
    assert preset_path.is_file(), f"missing paper-scale preset {preset_path.name}"
    preset = yaml.safe_load(preset_path.read_text()) or {}
    params = _parameters(path)
    unknown = sorted(set(preset) - set(params))
    assert not unknown, f"{preset_path.name} sets parameters the notebook does not have: {unknown}"
    assert preset.get("smoke", False) is False
    for name, value in preset.items():
        default = params[name]
        if default is not None and value is not None:
            assert isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int)), \
                f"{name}: {value!r} is not a {type(default).__name__} like the default {default!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_claims_are_recorded_under_the_notebooks_own_name(path):
    """A claims cell records under this notebook's path, which the dashboard looks up."""
    code = "".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    if "claims_table(" not in code:
        return
    expected = str(path.relative_to(ROOT / "book").with_suffix(""))
    assert f'notebook="{expected}"' in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_without_outputs(path):
    assert all(not c.get("outputs") for c in _cells(path) if c["cell_type"] == "code")


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert str(path.relative_to(ROOT).with_suffix("")) in toc, path
