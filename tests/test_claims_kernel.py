"""The claims record's code hash, as a real Jupyter kernel computes it, matches the notebook's."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_record_written_by_a_kernel_is_current(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from featadv_core import claims

    root = tmp_path / "proj"
    (root / "book" / "01_k").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_k/nb\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 3  # a comment\n"),
                nbformat.v4.new_markdown_cell("prose"),
                nbformat.v4.new_code_cell("from featadv_core.claims import Claim, claims_table\n\n"
                                          "claims_table([Claim('x is 3', '3', str(x), x == 3)],\n"
                                          "             notebook='01_k/nb', artifact='Fig. 0')"),
                nbformat.v4.new_code_cell("y = x + 1")]
    path = root / "book" / "01_k" / "nb.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setenv("FEATADV_CLAIMS_DIR", str(tmp_path / "records"))
    nbclient.NotebookClient(nbformat.read(path, as_version=4), timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    table, status = claims.collect(root)
    assert status.to_dict("records") == [{"notebook": "01_k/nb", "status": "current", "n_claims": 1}]
    assert table["replicated"].tolist() == [True] and table["artifact"].tolist() == ["Fig. 0"]
    record = json.loads((tmp_path / "records" / "01_k__nb.json").read_text())
    nb.cells[0].source = "x = 4"
    nbformat.write(nb, path)
    assert record["code_hash"] != claims.notebook_code_hash(path)
    assert claims.collect(root)[1]["status"].tolist() == ["stale"]
