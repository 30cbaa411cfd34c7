"""The set-up cell that starts every notebook, generated from ``_config.yml``'s ``repository.url``.

The repository's address lives in one place, ``_config.yml`` (Jupyter Book builds the Colab
launch buttons from it too). ``python book/_ext/setup_cell.py`` rewrites the first code cell of
every notebook from it; ``tests/test_notebooks.py`` fails when a notebook's cell is not the
current one. On Colab (or any machine without ``featadv_core``) the cell pip-installs the package
from the repository; ``FEATADV_INSTALL_SPEC`` replaces what it installs (pip arguments, e.g. a
local checkout: the Colab simulation test uses it), and Colab's own torch is kept. It then installs
``requirements-nodeps.txt``'s packages without their dependencies, as ``make setup`` does (their
metadata pins versions older than the book's own).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = '''# Set-up on Colab or any machine without the project: install featadv_core (Colab keeps its torch).
import importlib.util, os, shlex, subprocess, sys
if importlib.util.find_spec("featadv_core") is None:
    spec = os.environ.get("FEATADV_INSTALL_SPEC", "git+{url}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *shlex.split(spec)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", {nodeps}], check=True)'''


def repository_url(root: Path = ROOT) -> str:
    import yaml

    url = (yaml.safe_load((root / "_config.yml").read_text()).get("repository") or {}).get("url")
    if not url:
        raise ValueError("_config.yml has no repository.url: the notebooks' set-up cell installs from it")
    return url


def nodeps_requirements(root: Path = ROOT) -> list[str]:
    """The requirement specifiers of ``root/requirements-nodeps.txt`` (comments and blank lines dropped)."""
    lines = (root / "requirements-nodeps.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def setup_cell(root: Path = ROOT) -> str:
    """The source of the set-up cell for the repository named in ``root/_config.yml``."""
    return TEMPLATE.format(url=repository_url(root), nodeps=", ".join(map(repr, nodeps_requirements(root))))


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def main(root: Path = ROOT) -> int:
    """Rewrite every notebook's first code cell; returns how many changed."""
    source, changed = setup_cell(root), 0
    for path in notebooks(root):
        nb = json.loads(path.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(first["source"]) != source:
            first["source"] = source.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed += 1
    return changed


if __name__ == "__main__":
    print(f"{main()} notebook set-up cell(s) rewritten", file=sys.stderr)
