"""Chapter 5's core: the pass counter, the comparison's protocol, its summaries and its claims."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import comparison, defenses
from featadv_core.comparison_claims import comparison_claims
from featadv_core.cost import count_passes, first_layer


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))


def test_count_passes_known_answer():
    net = _mlp()
    x = torch.rand(4, 3, 2, 2, requires_grad=True)
    with count_passes(net) as passes:
        with torch.no_grad():
            net(x[:3])                                  # 3 forward, no graph
        out = net(x)                                    # 4 forward
        for k in range(3):                              # 3 backward passes of 4 images (a DeepFool step's K − 1)
            torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
    assert (passes.forward, passes.backward) == (7, 12)
    assert passes.seconds > 0
    assert passes.per_image(4) == pytest.approx({"forward": 7 / 4, "backward": 3.0, "seconds": passes.seconds / 4})
    net(x).sum().backward()                             # hooks removed on exit: nothing more is counted
    assert (passes.forward, passes.backward) == (7, 12)


def test_count_passes_follows_a_pass_that_stops_early(tiny_lenet):
    from featadv_core.features import extract

    with count_passes(tiny_lenet) as passes:
        extract(tiny_lenet, torch.rand(5, 1, 28, 28), "conv1")   # hooks stop the forward pass at conv1
    assert passes.forward == 5


def test_first_layer_and_bad_inputs():
    net = _mlp()
    assert first_layer(net) is net[1]
    with pytest.raises(ValueError, match="no parameters"):
        first_layer(nn.Sequential(nn.ReLU()))
    with count_passes(net) as passes:
        pass
    with pytest.raises(ValueError, match="positive"):
        passes.per_image(0)


class _Fixed(nn.Module):
    """Predicts the class stored for each image (its first pixel × 10), for known-answer pair draws."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 10).round().long()
        return nn.functional.one_hot(label, 3).float() * self.w


def test_draw_pairs_keeps_chapter_1s_protocol_and_correct_sources():
    n = 60
    y = torch.arange(n) % 3
    pred = y.clone()
    pred[::4] = (y[::4] + 1) % 3                        # a quarter of the pool misclassified
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 0, 0] = pred.float() / 10
    p = comparison.draw_pairs(_Fixed(), x, y, 30, seed=1)
    assert 0 < len(p) <= 30
    assert (pred[p.src] == y[p.src]).all() and (pred[p.guide] == y[p.guide]).all()   # both classified correctly
    assert (y[p.src] != y[p.guide]).all()
    assert torch.equal(p.x_src, x[p.src]) and torch.equal(p.y_guide, y[p.guide])
    sub = p.subset(slice(0, 2))
    assert len(sub) == 2 and torch.equal(sub.src, p.src[:2])


def test_run_method_rejects_bad_input(tiny_lenet):
    p = comparison.PairSet(*(torch.zeros(2, dtype=torch.long),) * 2, torch.rand(2, 1, 28, 28),
                           torch.zeros(2, dtype=torch.long), torch.rand(2, 1, 28, 28), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown method"):
        comparison.run_method("cw", tiny_lenet, p, layer="ip1", settings={})
    with pytest.raises(ValueError, match="decoder"):
        comparison.run_method("fsa_fa", tiny_lenet, p, layer="ip1", settings={})
    with pytest.raises(ValueError, match="ratio_layers"):
        comparison.compare(tiny_lenet, p.x_src, p.y_src, methods=["pgd"], settings={}, layer="ip1",
                           ratio_layers=["conv1"], n_pairs=2)


def test_run_method_images_and_success_on_a_tiny_lenet(tiny_lenet, one_thread):
    torch.manual_seed(0)
    x = torch.rand(40, 1, 28, 28)
    y = comparison.runs.predict(tiny_lenet, x)          # the network's own labels: every source is "correct"
    p = comparison.draw_pairs(tiny_lenet, x, y, 4, seed=0)
    adv = comparison.run_method("pgd", tiny_lenet, p, layer="ip1", settings={"eps": 8, "steps": 3, "step": 2},
                                cache=False, progress=False)
    assert adv.shape == p.x_src.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - p.x_src).abs().max() <= 8 / 255 + 1e-6
    hit = comparison.success(tiny_lenet, adv, p)
    assert torch.equal(hit["reached"], hit["label"] == p.y_guide)
    cost = comparison.method_cost("pgd", tiny_lenet, p, layer="ip1", settings={"eps": 8, "steps": 3, "step": 2})
    assert cost["forward"] >= 3 and cost["backward"] >= 3            # three gradient steps per image at least


def test_curvature_shares_known_answer():
    basis = torch.eye(6)[:, :2].double()                 # span(e1, e2)
    p = torch.tensor([[3.0, 4.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0], [1.0, 0, 1.0, 0, 0, 0]])
    shares = comparison.curvature_shares(p, {"curved": basis})["curved"]
    assert shares.tolist() == pytest.approx([1.0, 0.0, 2 ** -0.5])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.lists(st.floats(0, 10), min_size=2, max_size=40))
def test_summarise_rates_and_medians(flags, values):
    frame = pd.DataFrame({"method": ["a"] * len(flags), "flag": np.array(flags, float)})
    other = pd.DataFrame({"method": ["b"] * len(values), "value": values})
    s = comparison.summarise(pd.concat([frame, other]), rates=["flag"], medians=["value"])
    assert s.loc["a", ("flag", "value")] == pytest.approx(np.mean(flags))
    assert s.loc["a", ("flag", "low")] <= s.loc["a", ("flag", "value")] <= s.loc["a", ("flag", "high")]
    assert s.loc["b", ("value", "value")] == pytest.approx(np.median(values))
    assert s.loc["a", ("value", "n")] == 0 and np.isnan(s.loc["a", ("value", "value")])   # not measured: no value
    shown = comparison.format_summary(s, {"flag": "{:.0%}", "value": "{:.1f}"})
    assert shown.loc["a", "value"] == "—"


def _comp(o2_pgd: list[int], o2_fa: list[int]) -> comparison.Comparison:
    rows = [{"method": "pgd", "o2": v, "success": 1} for v in o2_pgd] + \
           [{"method": "fsa_fa", "o2": v, "success": 1} for v in o2_fa]
    return comparison.Comparison(None, {"pgd": None, "fsa_fa": None}, pd.DataFrame(rows), pd.DataFrame())


def test_claims_need_a_difference_not_a_tie():
    """Two methods O2 never flags give a zero-width [0, 0] interval: not "PGD flagged more often"."""
    tie = [c for c in comparison_claims(_comp([0] * 30, [0] * 30), layer="l", pgd_eps=8) if "O2 flags" in c.claim]
    assert len(tie) == 1 and not tie[0].replicated
    clear = [c for c in comparison_claims(_comp([1] * 28 + [0] * 2, [0] * 30), layer="l", pgd_eps=8)
             if "O2 flags" in c.claim]
    assert clear[0].replicated and not clear[0].undecided


def test_claims_leave_out_methods_that_did_not_run():
    nothing = comparison.Comparison(None, {}, pd.DataFrame({"method": [], "success": []}), pd.DataFrame())
    assert comparison_claims(nothing, layer="l", pgd_eps=8) == []


def test_cached_odds_rejects_a_head_that_is_not_linear(tiny_lenet):
    with pytest.raises(ValueError, match="not one of"):
        defenses.CachedOdds(tiny_lenet, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long),
                            feature_layer="ip1", head_layer="fc9", draws=2)
    with pytest.raises(ValueError, match="linear head"):
        defenses.CachedOdds(tiny_lenet, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long),
                            feature_layer="pool2", head_layer="conv2", draws=2)


def test_cached_odds_scores_once(tiny_lenet, one_thread):
    torch.manual_seed(0)
    x = torch.rand(12, 1, 28, 28)
    y = comparison.runs.predict(tiny_lenet, x)
    odds = defenses.CachedOdds(tiny_lenet, x, y, feature_layer="ip1", head_layer="ip2", draws=2, progress=False)
    first = odds.scores(x[:3])
    again = defenses.CachedOdds(tiny_lenet, x, y, feature_layer="ip1", head_layer="ip2", draws=2, progress=False)
    assert torch.equal(again.scores(x[:3]), first)                 # calibration and scores read back from disk
    assert torch.equal(odds.detect(x[:3], threshold=float("inf")), torch.zeros(3, dtype=torch.bool))


def test_draw_pairs_without_correct_labels_takes_the_predictions():
    """A random-weight stand-in classifies nothing correctly: its predictions become the labels."""
    n = 60
    y = torch.arange(n) % 3
    pred = (y + 1) % 3                                  # every image misclassified
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 0, 0] = pred.float() / 10
    with pytest.raises(ValueError, match="no image qualifies"):
        comparison.draw_pairs(_Fixed(), x, y, 10, seed=0)
    p = comparison.draw_pairs(_Fixed(), x, y, 10, seed=0, correct_only=False)
    assert len(p) == 10
    assert torch.equal(p.y_src, pred[p.src]) and torch.equal(p.y_guide, pred[p.guide])
    assert (p.y_src != p.y_guide).all()


def test_naturalness_leaves_classes_the_pool_lacks_unranked():
    torch.manual_seed(0)
    f_pool, y_pool = torch.randn(80, 6), torch.arange(80) % 4            # 20 points in each of classes 0-3
    f_adv = torch.randn(3, 6)
    out = comparison.naturalness(f_adv, torch.tensor([1, 7, 2]), f_pool, y_pool, torch.tensor([0, 1, 2]))
    assert np.isnan(out["rank"][1]) and np.isnan(out["inlier"][1])       # class 7 is not in the pool
    assert not np.isnan(out["rank"][[0, 2]]).any() and set(out["inlier"][[0, 2]].tolist()) <= {0.0, 1.0}
    alone = comparison.naturalness(f_adv[[0, 2]], torch.tensor([1, 2]), f_pool, y_pool, torch.tensor([0, 2]))
    assert torch.equal(alone["rank"], out["rank"][[0, 2]])               # the other rows are unaffected


def _study(success: dict[str, list[int]], linf: dict[str, list[float]]):
    from featadv_core import comparison_study as cs

    rows = [{"method": comparison.CLEAN, "pair": i, "success": np.nan, "changed": np.nan, "rank": 50.0}
            for i in range(4)]
    for m, ok in success.items():
        rows += [{"method": m, "pair": i, "success": s, "changed": s, "rank": 40.0 if s else np.nan,
                  "linf": linf[m][i] if s else np.nan} for i, s in enumerate(ok)]
    cost = pd.DataFrame({m: {"forward": 10.0 * (k + 1), "backward": 5.0, "seconds": 0.1} for k, m in enumerate(success)}).T
    comp = comparison.Comparison(None, {m: None for m in success}, pd.DataFrame(rows), cost)
    return cs.Study(comp, "ip1", ["ip1"], None, 8, (torch.zeros(4, 1, 2, 2), torch.zeros(4)), None,
                    {"feature_opt": {"delta": 10}}, None)


def test_study_table_failures_and_recommendations():
    from featadv_core import comparison_study as cs

    study = _study({"pgd": [1, 1, 1, 0], "deepfool": [1, 1, 1, 1], "feature_opt": [0, 0, 0, 0], "fgs": [1, 1, 1, 1]},
                   {"pgd": [8, 8, 8, 8], "deepfool": [3, 5, 4, 6], "feature_opt": [0] * 4, "fgs": [1, 1, 1, 1]})
    assert list(cs.columns(study)) == ["success", "changed", "linf", "rank"]   # the measures taken, in reading order
    with pytest.raises(ValueError, match="table"):
        cs.recommendations(study)
    shown = cs.table(study)
    assert shown.loc["PGD (ℓ∞)", "success"].startswith("75%") and shown.loc["PGD (ℓ∞)", "ℓ∞ /255"].startswith("8")
    assert shown.loc[cs.LABELS["feature_opt"], "ℓ∞ /255"] == "—"            # no successful adversary: no measure
    assert cs.failures(study).startswith("feature adversary, 0% of 4 pairs — likely because δ = 10/255")
    rec = cs.recommendations(study)
    assert rec["reach the guide's class most often"] == "DeepFool (minimal ℓ2) (100%)"   # FGS (untargeted) left out
    assert rec["smallest pixel change (ℓ∞ /255)"] == "DeepFool (minimal ℓ2) (4)"
    assert rec["cheapest (passes per image)"] == "PGD (ℓ∞) (15)"                # feature_opt fails: not usable
    assert cs.short("madry-resnet20-cifar10") == "madry" and cs.short("lenet-mnist-ft-lots") == "ft-lots"


def test_whitebox_claims_need_fsa_and_check_the_model_resists_pgd():
    from featadv_core.comparison_claims import whitebox_claims

    def comp(fa: list[int] | None, pgd: list[int]) -> comparison.Comparison:
        rows = [{"method": "pgd", "pair": i, "success": v} for i, v in enumerate(pgd)]
        rows += [{"method": "fsa_fa", "pair": i, "success": v} for i, v in enumerate(fa or [])]
        return comparison.Comparison(None, {"pgd": None} | ({"fsa_fa": None} if fa else {}), pd.DataFrame(rows),
                                     pd.DataFrame())

    beats, resists = whitebox_claims(comp([1] * 20 + [0] * 4, [0] * 20 + [1] * 4), name="madry")
    assert "madry" in beats.claim and beats.replicated and not beats.undecided
    assert resists.kind == "sanity" and resists.replicated                      # PGD 4 of 24
    only_pgd = whitebox_claims(comp(None, [1] * 20 + [0] * 4), name="ft-lots")   # no FSA (no decoder): one claim
    assert len(only_pgd) == 1 and not only_pgd[0].replicated and "not hardened" in only_pgd[0].why_not
