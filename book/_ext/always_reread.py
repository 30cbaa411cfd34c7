"""Sphinx extension: re-read the claims dashboard and the intro page on every build.

The dashboard (``book/claims.ipynb``) collects what the other notebooks recorded in *this*
build, and the intro page pastes its summary; Sphinx would otherwise re-read them only when
their own files change. The dashboard also carries ``mystnb.execution_mode: force`` in its
metadata, so jupyter-cache never serves an old execution of it.
"""
ALWAYS = ("book/claims", "book/intro")


def _outdated(app, env, added, changed, removed):
    return [doc for doc in ALWAYS if doc in env.found_docs]


def setup(app):
    app.connect("env-get-outdated", _outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
