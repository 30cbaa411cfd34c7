"""Sphinx extension: re-read the claims dashboard, the intro page and the Speed page on every build.

The dashboard (``book/claims.ipynb``) collects what the other notebooks recorded in *this*
build, and the intro page pastes its summary; Sphinx would otherwise re-read them only when
their own files change (the Speed page renders benchmarks/results/, which Sphinx does not track). The dashboard and the Speed page also carry ``mystnb.execution_mode: force`` in their
metadata, so jupyter-cache never serves an old execution of them.
"""
ALWAYS = ("book/claims", "book/intro", "book/speed")


def _outdated(app, env, added, changed, removed):
    return [doc for doc in ALWAYS if doc in env.found_docs]


def setup(app):
    app.connect("env-get-outdated", _outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
