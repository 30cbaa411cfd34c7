"""featadv_core.repro: seeding, the result cache, claims tables."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from featadv_core import repro


def test_seed_everything_repeats():
    repro.seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    repro.seed_everything(7)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def test_cache_hits_and_keys(tiny_lenet):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    v1 = repro.cached("t", {"a": 1}, compute, model=tiny_lenet)
    v2 = repro.cached("t", {"a": 1}, compute, model=tiny_lenet)
    assert len(calls) == 1 and torch.equal(v1["x"], v2["x"])
    repro.cached("t", {"a": 2}, compute, model=tiny_lenet)
    assert len(calls) == 2, "other parameters, other entry"
    with torch.no_grad():
        tiny_lenet.net.ip2.bias.add_(1.0)
    repro.cached("t", {"a": 1}, compute, model=tiny_lenet)
    assert len(calls) == 3, "other checkpoint, other entry"
    repro.cached("t", {"a": 1}, compute, model=tiny_lenet, refresh=True)
    assert len(calls) == 4


def test_cache_key_includes_code(monkeypatch):
    calls = []
    repro.cached("c", {}, lambda: calls.append(1))
    monkeypatch.setattr(repro, "_CORE_FINGERPRINT", "changed-code")
    repro.cached("c", {}, lambda: calls.append(1))
    assert len(calls) == 2


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    target = tmp_path / "x.pt"
    try:
        repro.atomic_save({"bad": Boom()}, target)
    except RuntimeError:
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_state_hash_changes_with_weights(tiny_lenet):
    h = repro.state_hash(tiny_lenet)
    assert h == repro.state_hash(tiny_lenet)
    with torch.no_grad():
        tiny_lenet.net.conv1.weight[0, 0, 0, 0] += 1e-3
    assert h != repro.state_hash(tiny_lenet)


def test_claims_table():
    rate = 0.93
    from featadv_core.claims import Claim, claims_table

    table = claims_table([Claim("guide label", "95%", f"{rate:.0%}", rate >= 0.9, "≥ 90%")])
    assert table.data.loc[0, "replicated"] == "✓ yes" and table.data.loc[0, "ours"] == "93%"
    long = "a claim longer than pandas' default column width of fifty characters, kept whole"
    assert long in claims_table([Claim(long, "x", "y", False)]).to_html()


def test_claims_table_shows_why_not_and_marks_sanity_checks():
    from featadv_core.claims import Claim, claims_table

    table = claims_table([Claim("a", "1", "2", False, "≥ 1", why_not="fewer pairs than the paper"),
                          Claim("b", "1", "1", True, "= 1", why_not="(never shown on a ✓)"),
                          Claim("bound respected", "‖r‖∞ ≤ δ", "0", True, "by construction", kind="sanity")])
    assert table.data["why not"].tolist() == ["fewer pairs than the paper", "", ""]
    assert table.data["replicated"].tolist() == ["✗ no", "✓ yes", "sanity ✓"]
    assert "fewer pairs than the paper" in table.to_html()
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim("c", "1", "1", True, kind="replicaton")


def test_claims_judged_on_an_interval_have_three_states():
    from featadv_core.analysis.uncertainty import Interval, rate_interval
    from featadv_core.claims import Claim, claims_table

    yes = Claim.judged("most", "> 50 %", rate_interval(90, 100), at_least=0.5, fmt="{:.0%}", criterion="> 50 %")
    no = Claim.judged("most", "> 50 %", rate_interval(10, 100), at_least=0.5, fmt="{:.0%}", criterion="> 50 %",
                      why_not="stand-in")
    maybe = Claim.judged("most", "> 50 %", Interval(0.6, 0.4, 0.8, 16, "t"), at_least=0.5, criterion="> 50 %",
                         why_not="16 pairs")
    assert (yes.replicated, yes.undecided, no.replicated, no.undecided) == (True, False, False, False)
    assert maybe.undecided and not maybe.replicated and maybe.n_to_decide == 64 and maybe.n == 16
    assert yes.ours.startswith("90% [") and yes.ours.endswith("n = 100") and yes.low < 0.9 < yes.high
    table = claims_table([yes, no, maybe]).data
    assert table["replicated"].tolist() == ["✓ yes", "✗ no", "undecided at n = 16 (≈ 64 would decide)"]
    assert table["why not"].tolist() == ["", "stand-in", "stand-in or scale: 16 pairs"]   # undecided: sample size


def test_an_undecided_claim_on_its_line_does_not_promise_a_sample():
    """A claim whose estimate sits next to the criterion needs absurd samples (n·(h/g)²): the verdict says so."""
    from featadv_core.analysis.uncertainty import Interval
    from featadv_core.claims import DECIDABLE_FACTOR, Claim, verdict

    near = Claim.judged("most", "> 50 %", Interval(0.5001, 0.4, 0.6, 16, "t"), at_least=0.5, criterion="> 50 %")
    assert near.undecided and near.n_to_decide > DECIDABLE_FACTOR * 16
    assert verdict(False, undecided=True, n_to_decide=near.n_to_decide, n=16) == \
        f"undecided at n = 16 (on the line: over {DECIDABLE_FACTOR}× this sample would decide)"
    assert verdict(False, undecided=True, n_to_decide=1600, n=16) == "undecided at n = 16 (≈ 1,600 would decide)"


def test_a_stand_in_diagnosis_names_the_paper_scale_run():
    from featadv_core.claims import diagnosis

    assert diagnosis(False, False, "scale", "16 pairs", "01_sabour2016/fig5_ratio_vs_delta") == (
        "stand-in or scale: 16 pairs (at the paper's scale: make paper NB=book/01_sabour2016/fig5_ratio_vs_delta.ipynb)")
    assert diagnosis(False, True, "", "16 pairs", "ch/nb").endswith("make paper NB=book/ch/nb.ipynb)")  # undecided
    assert diagnosis(False, False, "criterion", "the paper says", "ch/nb") == "ambiguous claim or our criterion: the paper says"
    assert diagnosis(True, False, "scale", "", "ch/nb") == ""


def test_claims_judged_on_every_interval_name_the_weakest():
    from featadv_core.analysis.uncertainty import Interval
    from featadv_core.claims import Claim

    curve = {"δ=1": Interval(0.9, 0.85, 0.95, 16, "t"), "δ=5": Interval(0.82, 0.7, 0.9, 12, "t"),
             "δ=10": Interval(0.95, 0.9, 0.99, 16, "t")}
    maybe = Claim.judged_all("above 0.8", "≥ 0.8", curve, at_least=0.75, criterion="every δ")
    assert maybe.undecided and maybe.ours == "2 of 3 pass; weakest δ=5: 0.82 [0.70, 0.90]" and maybe.n == 12
    assert maybe.n_to_decide == 36  # the δ=5 interval: 12 · (0.12 / 0.07)² ≈ 35.3 units
    yes = Claim.judged_all("above 0.6", "≥ 0.6", curve, at_least=0.6, criterion="every δ")
    no = Claim.judged_all("below 0.8", "≤ 0.8", curve, at_most=0.8, criterion="every δ")
    assert (yes.replicated, yes.undecided, no.replicated, no.undecided) == (True, False, False, False)
    assert no.ours.startswith("0 of 3 pass; weakest δ=10") and no.low == 0.9


def test_conjoined_claims_need_every_part():
    from featadv_core.analysis.uncertainty import Interval
    from featadv_core.claims import Claim

    yes = Claim.judged("rate", "p", Interval(0.9, 0.85, 0.95, 40, "t"), at_least=0.8, criterion="c")
    maybe = Claim.judged("rate", "p", Interval(0.82, 0.7, 0.9, 12, "t"), at_least=0.75, criterion="c")
    exact_ok, exact_no = Claim("figure", "p", "label kept", True), Claim("figure", "p", "label lost", False)
    both = Claim.conjoined("c", "p", "all", [("rate", yes), ("figure", exact_ok)], why_not="w", why_undecided="u")
    assert both.replicated and both.ours == "rate: " + yes.ours + "; figure: label kept" and both.n == 40
    pending = Claim.conjoined("c", "p", "all", [("a", yes), ("b", maybe)], why_not="w", why_undecided="u")
    assert pending.undecided and pending.why_not == "u" and pending.n == 12 and pending.n_to_decide == 36
    failed = Claim.conjoined("c", "p", "all", [("a", maybe), ("b", exact_no)], why_not="w", why_undecided="u")
    assert not failed.replicated and not failed.undecided and failed.why_not == "w" and failed.n_to_decide is None
    with pytest.raises(ValueError, match="at least one part"):
        Claim.conjoined("c", "p", "all", [])


def test_counted_claims_need_enough_parts():
    """"At least 2 of 3": ✓ with two passing; undecided when a straddling part could make the second (its need is the
    claim's); ✗ when even every straddling part passing would leave too few."""
    from featadv_core.analysis.uncertainty import Interval
    from featadv_core.claims import Claim

    yes = Claim.judged("rate", "p", Interval(0.9, 0.85, 0.95, 40, "t"), at_least=0.8, criterion="c")
    maybe = Claim.judged("rate", "p", Interval(0.82, 0.7, 0.9, 12, "t"), at_least=0.75, criterion="c")
    no = Claim("column", "p", "0.5", False, n=30)
    two = Claim.counted("c", "p", "≥ 2 of 3", [("a", yes), ("b", yes), ("c", no)], at_least=2, why_not="w")
    assert two.replicated and not two.undecided and two.why_not == "" and two.n == 40
    assert two.ours == f"2 of 3 pass: a: {yes.ours}; b: {yes.ours}; c: 0.5"
    pending = Claim.counted("c", "p", "≥ 2 of 3", [("a", yes), ("b", maybe), ("c", no)], at_least=2, why_not="w",
                            why_undecided="u")
    assert pending.undecided and pending.why_not == "u" and pending.n == 12 and pending.n_to_decide == maybe.n_to_decide
    assert pending.ours.startswith("1 of 3 pass, 1 undecided: ")
    short = Claim.counted("c", "p", "≥ 3 of 3", [("a", yes), ("b", maybe), ("c", no)], at_least=3, why_not="w")
    assert not short.replicated and not short.undecided and short.why_not == "w" and short.n == 30
    with pytest.raises(ValueError, match="at_least"):
        Claim.counted("c", "p", "≥ 4 of 3", [("a", yes), ("b", maybe), ("c", no)], at_least=4)


def _fake_package(root):
    """A package named like the core, with a small import graph: a → b (relative), c alone."""
    pkg = root / repro._PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom ..c import thing as _unused\n")
    (pkg / "sub" / "b.py").write_text("import numpy\nX = 1\n")
    (pkg / "c.py").write_text("thing = 2\n")
    (pkg / "d.py").write_text("Y = 3\n")
    return pkg


def test_cached_runs_do_not_depend_on_the_claims_statistics():
    """Every cached attack names a ``runs`` function in its code fingerprint: the modules ``runs`` reaches must not
    include the claims' statistics (``analysis.uncertainty``) or the claims themselves, or a change to how a claim is
    judged would invalidate every cached attack of the book (it did once: a session's full render went cold)."""
    reached, todo = set(), ["featadv_core.runs"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(repro._imported_modules(name, repro._module_file(name)) - reached)
    assert "featadv_core.analysis.curvature" in reached   # Algorithm 1, which runs caches
    assert not reached & {"featadv_core.analysis.uncertainty", "featadv_core.claims", "featadv_core.analysis"}


def test_code_fingerprint_follows_imports_only(tmp_path, monkeypatch):
    pkg = _fake_package(tmp_path)
    monkeypatch.setattr(repro, "_PACKAGE_DIR", pkg)
    name = f"{repro._PACKAGE}.sub.a"
    before = repro.code_fingerprint(name)
    assert before == repro.code_fingerprint(name)
    (pkg / "d.py").write_text("Y = 4\n")  # not imported by a: same key
    assert repro.code_fingerprint(name) == before
    (pkg / "sub" / "b.py").write_text("import numpy\nX = 2\n")  # imported (relative): new key
    after_b = repro.code_fingerprint(name)
    assert after_b != before
    (pkg / "c.py").write_text("thing = 3\n")  # imported via ``from ..c import``: new key
    assert repro.code_fingerprint(name) != after_b


def test_code_fingerprint_accepts_functions_and_rejects_builtins():
    from featadv_core.attacks import feature_opt, lbfgsb

    assert repro.code_fingerprint(feature_opt) == repro.code_fingerprint("featadv_core.attacks.feature_opt")
    assert repro.code_fingerprint(lbfgsb) != repro.code_fingerprint(feature_opt)
    here = repro.code_fingerprint(_fake_package)  # outside the core: this test file's source
    assert here == repro.code_fingerprint(test_claims_table) != repro.code_fingerprint(feature_opt)
    with pytest.raises(ValueError, match="no source file"):
        repro.code_fingerprint(len)


def test_cache_with_code_ignores_unrelated_core_changes(monkeypatch):
    from featadv_core import features

    calls = []
    repro.cached("k", {}, lambda: calls.append(1), code=(features,))
    monkeypatch.setattr(repro, "_CORE_FINGERPRINT", "changed-code")  # elsewhere in the core
    repro.cached("k", {}, lambda: calls.append(1), code=(features,))
    assert len(calls) == 1
    monkeypatch.setattr(repro, "code_fingerprint", lambda *m: "features-changed")
    repro.cached("k", {}, lambda: calls.append(1), code=(features,))
    assert len(calls) == 2


def test_code_fingerprint_ignores_docstrings_and_comments(tmp_path, monkeypatch):
    pkg = _fake_package(tmp_path)
    monkeypatch.setattr(repro, "_PACKAGE_DIR", pkg)
    name = f"{repro._PACKAGE}.c"
    (pkg / "c.py").write_text('"""Doc."""\ndef f():\n    """Old words."""\n    return 2  # two\n')
    before = repro.code_fingerprint(name)
    (pkg / "c.py").write_text('"""New doc."""\ndef f():\n    """New words."""\n    return 2  # 2\n')
    assert repro.code_fingerprint(name) == before
    (pkg / "c.py").write_text('"""New doc."""\ndef f():\n    """New words."""\n    return 3\n')
    assert repro.code_fingerprint(name) != before


def test_claims_are_recorded_and_judged_current_by_code(tmp_path, monkeypatch):
    """A record is current only for the notebook code that wrote it (the dashboard's rule)."""
    import json

    from featadv_core import claims

    root = tmp_path / "proj"
    (root / "book" / "01_x").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: book/01_x/nb\n  - file: book/01_x/plain\n")
    cells = ["x = 1", "ok = x > 0", "repro.claims_table([c], notebook='01_x/nb')", "print('after')"]
    nb = {"cells": [{"cell_type": "code", "source": [s], "metadata": {}, "outputs": []} for s in cells]
          + [{"cell_type": "markdown", "source": ["text"], "metadata": {}}], "metadata": {}, "nbformat": 4,
          "nbformat_minor": 5}
    (root / "book" / "01_x" / "nb.ipynb").write_text(json.dumps(nb))
    (root / "book" / "01_x" / "plain.ipynb").write_text(json.dumps(dict(nb, cells=nb["cells"][:2])))
    monkeypatch.setenv("FEATADV_CLAIMS_DIR", str(tmp_path / "records"))
    assert claims.toc_notebooks(root) == ["01_x/nb", "01_x/plain"]
    assert claims.find_book_root(root / "book" / "01_x") == root

    _, status = claims.collect(root)
    assert status.to_dict("records") == [{"notebook": "01_x/nb", "status": "missing", "n_claims": 0}]

    executed = {"hash": None}
    monkeypatch.setattr(claims, "executed_code_hash", lambda: executed["hash"])
    claim = claims.Claim("c", "1", "2", np_bool_true(), "crit", "reason")
    executed["hash"] = claims._hash_cells(cells[:2] + ["repro.claims_table([c], notebook='01_x/nb')\n"])
    claims.claims_table([claim], notebook="01_x/nb", artifact="Fig. 9")
    table, status = claims.collect(root)
    assert status["status"].tolist() == ["current"]
    assert table.to_dict("records")[0] == {"chapter": "01_x", "notebook": "01_x/nb", "artifact": "Fig. 9",
                                           "claim": "c", "paper": "1", "ours": "2", "replicated": True,
                                           "criterion": "crit", "why_not": "reason", "kind": "replication",
                                           "n": None, "low": None, "high": None, "undecided": False,
                                           "n_to_decide": None, "cause": ""}
    executed["hash"] = claims._hash_cells(["x = 2"] + cells[1:3])   # e.g. papermill injected x = 2
    claims.claims_table([claim], notebook="01_x/nb")
    table, status = claims.collect(root)
    assert status["status"].tolist() == ["stale"] and table.empty
    with pytest.raises(ValueError):
        claims.record([claim], notebook="01_x/nb.ipynb")


def np_bool_true():
    import numpy as np

    return np.float64(0.5) < 1.0


def test_stable_hash_keys_tensors_by_content():
    """json.dumps(default=str) summarised a 2,000-element tensor, so a one-value change kept the key."""
    a = torch.zeros(2000)
    b = a.clone()
    b[1000] = 1.0
    assert repro.stable_hash({"x": a}) != repro.stable_hash({"x": b})
    assert repro.stable_hash({"x": a}) == repro.stable_hash({"x": a.clone()})
    assert repro.stable_hash({"x": a.numpy()}) == repro.stable_hash({"x": a})
    assert repro.stable_hash({"x": a}) != repro.stable_hash({"x": a.double()}), "dtype counts"
    assert repro.stable_hash({"v": np.float32(0.5)}) == repro.stable_hash({"v": 0.5})


def test_stable_hash_of_plain_values_is_unchanged():
    """JSON values hash as before (the zoo's recipe keys and every cached key of plain options stay valid)."""
    import hashlib
    import json

    value = {"eps": 0.1, "layers": ["conv3", "fc7"], "steps": 3, "box": None, "shape": (1, 2)}
    assert repro.stable_hash(value) == hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def test_stable_hash_rejects_what_has_no_stable_form():
    """A lambda or an object would be keyed by its address (a new key every run, or a stale hit)."""
    with pytest.raises(TypeError, match="no stable form"):
        repro.stable_hash({"loss": lambda z: z})
    with pytest.raises(TypeError, match="no stable form"):
        repro.stable_hash({"model": torch.nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="no stable form"):
        repro.stable_hash({"obj": object()})
    named = repro.stable_hash({"fn": repro.stable_hash})
    assert named == repro.stable_hash({"fn": repro.stable_hash}) != repro.stable_hash({"fn": repro.tensor_hash})
    assert repro.stable_hash({"d": torch.float16, "dev": torch.device("cpu")}) == repro.stable_hash(
        {"d": "torch.float16", "dev": "cpu"})


def test_model_hash_covers_class_layer_map_and_dtype(tiny_lenet):
    import copy

    base = repro.model_hash(tiny_lenet)
    other_map = copy.deepcopy(tiny_lenet)
    other_map.layer_map = dict(list(tiny_lenet.layer_map.items())[:-1])
    assert repro.state_hash(other_map) == repro.state_hash(tiny_lenet)
    assert repro.model_hash(other_map) != base, "same weights, another layer map"

    class Other(type(tiny_lenet)):
        pass

    same_weights = copy.deepcopy(tiny_lenet)
    same_weights.__class__ = Other
    assert repro.model_hash(same_weights) != base, "same weights, another forward"
    assert repro.model_hash(copy.deepcopy(tiny_lenet).double()) != base


def test_cache_entries_record_device_dtype_and_torch(tiny_lenet):
    repro.cached("meta", {"a": 1}, lambda: torch.ones(2), model=tiny_lenet)
    (path,) = (repro.cache_dir() / "results").glob("meta-*.pt")
    meta = repro.entry_meta(path)
    assert meta["device"] == "cpu" and meta["dtype"] == "torch.float32" and meta["torch"] == torch.__version__
    assert torch.equal(repro.cached("meta", {"a": 1}, lambda: torch.zeros(2), model=tiny_lenet), torch.ones(2))


def test_claims_carry_a_diagnosis_beside_a_failure():
    from featadv_core.analysis.uncertainty import Interval
    from featadv_core.claims import CAUSES, Claim, claims_table

    no = Claim("a", "1", "2", False, "≥ 1", why_not="16 pairs per point", cause="scale")
    maybe = Claim.judged("b", "> 0.5", Interval(0.6, 0.4, 0.8, 16, "t"), at_least=0.5, criterion="> 0.5",
                         why_not="the paper does not say over what", cause="criterion")
    yes = Claim("c", "1", "1", True, "= 1", why_not="(never shown)", cause="negative")
    assert no.diagnosis == f"{CAUSES['scale']}: 16 pairs per point"
    assert claims_table([no, maybe, yes]).data["why not"].tolist() == [
        "stand-in or scale: 16 pairs per point", "ambiguous claim or our criterion: the paper does not say over what", ""]
    assert Claim("d", "1", "0", False, cause="bug").diagnosis == "our bug"      # a cause alone is shown too
    assert Claim("f", "1", "?", False, undecided=True, why_not="n = 16").diagnosis == "stand-in or scale: n = 16"
    assert Claim("g", "1", "0", False, why_not="x").diagnosis == "x"             # a ✗ not diagnosed yet
    with pytest.raises(ValueError, match="cause must be one of"):
        Claim("e", "1", "1", False, cause="noise")
