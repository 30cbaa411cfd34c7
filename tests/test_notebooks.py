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


def _ext_module(name: str):
    """A module of book/_ext (the book's build helpers are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_smoke_overrides_name_real_parameters():
    """What the preset smoke run switches off for random weights is a parameter of an existing notebook,
    of the default's type (or None, which switches a step off), and differs from the preset (an override that
    changes nothing is stale)."""
    import yaml

    overrides = _ext_module("paper_smoke").RANDOM_WEIGHT_OVERRIDES
    by_name = {p.name: p for p in NOTEBOOKS}
    for notebook, values in overrides.items():
        assert notebook in by_name, notebook
        params = _parameters(by_name[notebook])
        preset = yaml.safe_load(by_name[notebook].with_suffix(".paper.yaml").read_text()) or {}
        for name, (value, why) in values.items():
            assert name in params and (value is None or type(value) is type(params[name])) and why
            assert preset.get(name, params[name]) != value


def test_paper_smoke_ilsvrc_stand_in_has_imagenet_labels(tmp_path, offline_dir):
    """The ILSVRC stand-in is labelled in ImageNet's space (as a real ILSVRC subset is), the faces one by folder."""
    from featadv_core import runs

    paper_smoke = _ext_module("paper_smoke")
    ilsvrc = paper_smoke.image_folder(tmp_path, "ilsvrc")
    _, y = runs.load_images(str(ilsvrc), "test")
    names = runs.class_names(str(ilsvrc), "test")
    assert sorted({names[i] for i in y.tolist()}) == sorted(
        ["airliner", "beach wagon", "brambling", "tabby", "gazelle", "golden retriever", "bullfrog", "sorrel",
         "container ship", "trailer truck"])
    assert len(y) == 10 * paper_smoke.PER_CLASS["test"]
    _, y_faces = runs.load_images(str(paper_smoke.image_folder(tmp_path, "faces")), "val")
    assert sorted(set(y_faces.tolist())) == list(range(10))


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


def test_setup_cells_are_generated_from_the_repository_url():
    """Every notebook's set-up cell is the one generated from _config.yml (one place for the URL)."""
    gen = _ext_module("setup_cell")
    expected = gen.setup_cell()
    assert gen.repository_url() in expected and expected.count("git+https://") == 1
    stale = [str(p.relative_to(ROOT)) for p in NOTEBOOKS
             if "".join(next(c for c in _cells(p) if c["cell_type"] == "code")["source"]) != expected]
    assert stale == [], f"run `python book/_ext/setup_cell.py`: {stale}"


@pytest.mark.data
@pytest.mark.slow
def test_a_colab_session_installs_the_package_and_runs_a_notebook(tmp_path, offline_dir):
    """A fresh virtual environment without featadv_core (Colab's libraries stand in by the project
    venv's site-packages, whose .pth files — the editable install — are not processed): the set-up
    cell installs featadv_core from this checkout, then the models page's first cells run in smoke mode."""
    import os
    import site
    import subprocess
    import venv

    env_dir = tmp_path / "colab"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "colab_libraries.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # everything the package needs is already "on Colab"
    import shutil

    src = tmp_path / "checkout"  # what `git+<url>` would fetch, built outside the working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "featadv_core", src / "featadv_core", ignore=shutil.ignore_patterns("__pycache__"))
    env["FEATADV_INSTALL_SPEC"] = f"--no-deps --no-build-isolation --target {purelib} {src}"
    probe = [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('featadv_core'))"]
    assert subprocess.run(probe, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip() == "None"
    setup = _ext_module("setup_cell").setup_cell()
    subprocess.run([str(python), "-c", setup], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    where = subprocess.run([str(python), "-c", "import featadv_core; print(featadv_core.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
    assert where.startswith(purelib), where
    nb = ROOT / "book" / "00_models_and_data" / "models_and_data.ipynb"
    out = tmp_path / "out.ipynb"
    subprocess.run([str(python), "-m", "papermill", str(nb), str(out), "-p", "smoke", "True", "--cwd",
                    str(tmp_path), "-k", "python3"], cwd=tmp_path, env=env, check=True, capture_output=True,
                   timeout=900)
    executed = json.loads(out.read_text())
    assert not any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", []))
