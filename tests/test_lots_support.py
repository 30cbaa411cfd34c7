"""Chapter 2's support code: attempt summaries, McNemar/Spearman, the Table 1 layout, cached runners, deformations."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from featadv_core import analysis, attacks, metrics, reference, runs
from featadv_core.models import adversarial_data, architectures, zoo
from featadv_core.plotting import tables

pytestmark = pytest.mark.usefixtures("one_thread")


def test_summarise_counts_per_attempt_and_describes_only_successes():
    table = {"success": torch.tensor([True, False, True, True]), "pass": torch.tensor([0.5, 1.0, 0.7, 0.9], dtype=torch.float64),
             "l2": torch.tensor([10.0, 0.0, 30.0, 20.0], dtype=torch.float64), "linf": torch.tensor([1.0, 0.0, 3.0, 2.0], dtype=torch.float64),
             "ecc_failed": torch.tensor([False, False, True, False]), "zero_direction": torch.tensor([False, True, False, False])}
    groups = {"a": torch.tensor([True, True, False, False]), "b": torch.tensor([False, False, True, True])}
    s = analysis.summarise(table, groups)
    assert s.loc["a", "attempts"] == 2 and s.loc["a", "success_pct"] == 50.0
    assert s.loc["a", "pass_mean"] == 0.5 and s.loc["a", "pass_std"] == 0.0 and s.loc["a", "zero_direction"] == 1
    assert s.loc["b", "l2_mean"] == 25.0 and s.loc["b", "l2_std"] == pytest.approx(5.0)  # population std
    assert s.loc["b", "ecc_failures"] == 1


def test_mcnemar_and_spearman_known_answers():
    a = [True] * 10 + [False] * 2
    b = [True] * 2 + [False] * 8 + [True] * 2
    res = analysis.mcnemar(a, b)
    assert (res["a_only"], res["b_only"]) == (8, 2)
    assert res["p"] == pytest.approx(2 * sum(math.comb(10, k) for k in range(3)) / 2 ** 10)
    assert analysis.mcnemar(a, a)["p"] == 1.0
    with pytest.raises(ValueError, match="same images"):
        analysis.mcnemar(a, b[:5])
    assert analysis.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert math.isnan(analysis.spearman([1, 2, 3], [5, 5, 5]))


def test_attack_cells_use_the_papers_layout():
    paper = reference.table("rozsa2017_table1").set_index(["model", "attack"])
    cells = tables.attack_cells(paper, attacks=["FGS", "LOTS"], models=["Basic LeNet", "LOTS"], error={"Basic LeNet": 0.91})
    assert cells.loc["Basic LeNet", "FGS"] == "85.37% | 0.4303 ± 0.1098 / 718.8 ± 281.2 | 34.6 ± 13.2"
    assert cells.loc["Basic LeNet", "error"] == "0.91%" and cells.loc["LOTS", "error"] == ""
    with pytest.raises(ValueError, match="unknown table"):
        reference.table("nope")


def test_run_detailed_and_run_attempts_cache_their_chunks_and_add_pass(monkeypatch):
    torch.manual_seed(0)
    model = architectures.lenet().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 1, 28, 28), generator=gen).float() / 255
    scored = []  # PASS is computed only for rows that did not return their origin
    real_pass = metrics.pass_score

    def counting_pass(x_adv, x_ref, **kwargs):
        scored.append(len(x_adv))
        return real_pass(x_adv, x_ref, **kwargs)

    monkeypatch.setattr(metrics, "pass_score", counting_pass)
    calls = []
    real = attacks.lots_self

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    counting.__name__ = "lots_self"
    first = runs.run_detailed(counting, model, [x], batch_size=2, layer="ip2", sign=-1, grid_points=8, bisect_steps=2)
    again = runs.run_detailed(counting, model, [x], batch_size=2, layer="ip2", sign=-1, grid_points=8, bisect_steps=2)
    assert calls == [2, 2] and torch.equal(first["images"], again["images"])
    assert first["images"].dtype == torch.uint8 and first["pass"].shape == (4,) and first["ecc_failed"].dtype == torch.bool
    ok = first["success"]
    assert bool((first["pass"][~ok] > 0.999).all())  # failures return the origin itself
    # all attempts on a trained LeNet: 47 per origin, origin indices global across chunks
    net = zoo.get("lenet-mnist", device="cpu")
    res = attacks.lots_iterative(net, torch.full((10, 1, 28, 28), 128 / 255), 30 * torch.eye(10), layer="ip2",
                                 y_orig=attacks.predict_labels(net, torch.full((10, 1, 28, 28), 128 / 255)),
                                 target=torch.arange(10), max_steps=400)
    scored.clear()
    table = runs.run_attempts(net, x[:3], res.images, layers=["conv1", "ip2"], batch_size=2, grid_points=8, bisect_steps=2)
    assert len(table["success"]) == 3 * (1 + 1 + 9 + 18) and table["origin"].max() == 2
    assert table["pass"].dtype == torch.float64 and not table["pass"].isnan().any()
    adv, origins, ok = table["images"].float() / 255, x[table["origin"]], table["success"]
    same = (adv == origins).flatten(1).all(1)
    assert 0 < int(same.sum()) and not bool((same & ok).any())  # identical rows exist and never succeed
    assert sum(scored) == int((~same).sum())
    full, full_failed = real_pass(adv, origins, details=True)  # every row scored, as before the skip
    torch.testing.assert_close(table["pass"], full, rtol=0, atol=1e-6)
    assert torch.equal(table["ecc_failed"][ok], full_failed[ok])


def test_deformations_are_random_per_image_reproducible_and_in_range():
    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    a = adversarial_data.deform(x, torch.Generator().manual_seed(0))
    b = adversarial_data.deform(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(a[0], a[1])  # each image its own field
    assert float((a - x).abs().mean()) > 0.01  # it deforms
    assert 0.5 < float(a.sum() / x.sum()) < 1.5  # and keeps most of the stroke


def test_table1_models_are_zoo_recipes_fine_tuned_from_the_basic_lenet():
    ids = [k for k in zoo.available() if k.startswith("lenet-mnist-ft-")]
    assert len(ids) == 9
    for model_id in ids:
        recipe = zoo.ZOO[model_id]
        assert recipe.base == "lenet-mnist" and recipe.train_data is not None
    assert zoo.ZOO["lenet-mnist-deformed"].base is None
    with pytest.raises(ValueError, match="group"):
        adversarial_data.training_attempts(architectures.lenet(), "pgd")


def test_training_attempts_are_cached_chunk_by_chunk(monkeypatch):
    """The hour-long generation is chunked: the chunks equal one call on all origins, and a rerun
    after a kill recomputes only the missing chunk."""
    from featadv_core import repro

    torch.manual_seed(0)
    base = architectures.lenet().eval()
    x = torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.arange(60) % 10
    monkeypatch.setattr(adversarial_data.data, "load", lambda name, split, **kw: (x, y))
    monkeypatch.setattr(adversarial_data, "predict_labels", lambda model, xs: y)  # every digit "correct"
    monkeypatch.setitem(adversarial_data.ORIGINS_PER_CLASS, "hc", 1)
    monkeypatch.setattr(adversarial_data, "_CHUNK", 2)
    calls = []
    real = adversarial_data.all_attempts
    monkeypatch.setattr(adversarial_data, "all_attempts", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    table = adversarial_data.training_attempts(base, "hc")
    n_origins = sum(calls)
    assert max(calls) == 2 and n_origins == 10, "one origin per class, two per chunk"
    origins = adversarial_data.pairs.stratified(y, 1, mask=torch.ones(60, dtype=torch.bool), seed=0)
    x_t = x[adversarial_data.pairs.first_correct_per_class(y, y)]
    whole = real(base, x[origins], x_t, layers=adversarial_data.LAYERS, kinds=("hc",))
    assert torch.equal(table["images"], whole["images"]) and torch.equal(table["origin"], origins[whole["origin"]])
    entries = sorted((repro.cache_dir() / "results").glob("lots_training_attempts-hc-*.pt"))
    assert len(entries) == len(calls)
    entries[-1].unlink()                                    # a run killed before its last chunk
    calls.clear()
    again = adversarial_data.training_attempts(base, "hc")
    assert calls == [2] and torch.equal(again["images"], table["images"])
