"""featadv_core.analysis.neighbour_stats: per-pair Table 1 / Fig. 4 statistics on synthetic data."""
from __future__ import annotations

import pytest
import torch

from featadv_core import analysis
from featadv_core.analysis import neighbour_stats as ns


def _pool(seed: int = 0, n_per_class: int = 30, dim: int = 6, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    centres = 10.0 * torch.randn(classes, dim, generator=g)
    feats = torch.cat([centres[c] + torch.randn(n_per_class, dim, generator=g) for c in range(classes)])
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    perm = torch.randperm(len(labels), generator=g)              # classes interleaved in the pool
    return feats[perm], labels[perm]


def test_adversary_equal_to_guide_shares_its_neighbours_and_rank():
    feats, labels = _pool()
    guides = torch.tensor([0, 5, 17, 40, 41])
    st = ns.guide_neighbour_stats(feats[guides], guides, feats, labels, k=3)
    # α = g exactly: with g excluded from both neighbour searches the neighbourhoods coincide
    assert torch.equal(st.intersection, torch.ones(5))
    assert torch.equal(st.nn_adv, st.nn_guide)
    assert torch.allclose(st.delta_rank, torch.zeros(5))
    assert not (st.nn_adv == guides[:, None]).any(), "g is excluded from α's neighbours"
    assert (labels[st.nn_adv] == labels[guides][:, None]).all(), "neighbours come from the guide's class"


def test_guide_neighbour_stats_matches_per_pair_reference():
    feats, labels = _pool(1)
    guides = torch.tensor([3, 8, 50, 77])
    f_adv = feats[guides] + 0.8 * torch.randn(4, feats.shape[1], generator=torch.Generator().manual_seed(2))
    st = ns.guide_neighbour_stats(f_adv, guides, feats, labels, k=3)
    for q, gi in enumerate(guides.tolist()):
        members = torch.nonzero(labels == labels[gi]).flatten()
        local = int((members == gi).nonzero())
        cf = feats[members]
        _, na = analysis.knn(f_adv[q:q + 1], cf, 3, exclude=[local])
        _, ng = analysis.knn(cf[local:local + 1], cf, 3, exclude=[local])
        assert set(members[na[0]].tolist()) == set(st.nn_adv[q].tolist())
        assert set(members[ng[0]].tolist()) == set(st.nn_guide[q].tolist())
        inter = len(set(na[0].tolist()) & set(ng[0].tolist())) / 3
        assert st.intersection[q].item() == pytest.approx(inter)
        ra = analysis.rank_statistic(f_adv[q:q + 1], cf, exclude=[local])
        rg = analysis.rank_statistic(cf[local:local + 1], cf, exclude=[local])
        assert st.delta_rank[q].item() == pytest.approx((ra - rg).item())


def test_far_adversary_has_the_top_rank():
    feats, labels = _pool(3)
    gi = int(torch.nonzero(labels == 0)[0])
    far = feats[gi] + 100.0
    st = ns.guide_neighbour_stats(far[None], torch.tensor([gi]), feats, labels)
    assert st.rank_adv.item() == 100.0                           # an outlier has the top rank
    assert st.delta_rank.item() > 0


def test_guide_neighbour_stats_rejects_bad_input():
    feats, labels = _pool()
    with pytest.raises(ValueError, match="rows"):
        ns.guide_neighbour_stats(feats[:2], torch.tensor([0]), feats, labels)
    with pytest.raises(ValueError, match="outside"):
        ns.guide_neighbour_stats(feats[:1], torch.tensor([len(labels)]), feats, labels)
    with pytest.raises(ValueError, match="labels"):
        ns.guide_neighbour_stats(feats[:1], torch.tensor([0]), feats, labels[:-1])


def test_adversary_nn_ranks_on_a_class_point():
    feats, labels = _pool(4)
    # α placed exactly on a class point p: its nearest neighbour is p, ranks are close
    p = torch.tensor([2, 9, 31])
    r = ns.adversary_nn_ranks(feats[p] + 1e-4, labels[p], feats, labels)
    assert torch.equal(r.nn1, p)
    assert (labels[r.nn1] == labels[p]).all()
    # excluding p moves n1 away from it and stays within the class
    r2 = ns.adversary_nn_ranks(feats[p] + 1e-4, labels[p], feats, labels, exclude=p)
    assert not (r2.nn1 == p).any()
    assert (labels[r2.nn1] == labels[p]).all()
    # an excluded index from another class is ignored
    other = torch.tensor([int(torch.nonzero(labels != labels[q])[0]) for q in p.tolist()])
    r3 = ns.adversary_nn_ranks(feats[p] + 1e-4, labels[p], feats, labels, exclude=other)
    assert torch.equal(r3.nn1, p)
    # rank of n1 equals the rank_statistic of that point within its class
    for q, c in enumerate(labels[p].tolist()):
        members = torch.nonzero(labels == c).flatten()
        local = int((members == r.nn1[q]).nonzero())
        want = analysis.rank_statistic(feats[members][local:local + 1], feats[members], exclude=[local])
        assert r.rank_nn[q].item() == pytest.approx(want.item())


def test_inlier_scores_shapes_and_bounds():
    g = torch.Generator().manual_seed(5)
    # a 2-d plane embedded in 12-d, points near it; the centres are pool points
    basis = torch.linalg.qr(torch.randn(12, 2, generator=g)).Q
    pool = 3.0 * torch.randn(300, 2, generator=g) @ basis.T + 0.01 * torch.randn(300, 12, generator=g) + 5.0
    centres = pool[:4]
    on_plane = centres + (0.5 * torch.randn(4, 2, generator=g)) @ basis.T
    off_plane = centres + 0.5 * torch.randn(4, 12, generator=g)
    s_on = ns.inlier_scores(on_plane, centres, pool, n_components=2, metric="euclidean", generator=0)
    s_off = ns.inlier_scores(off_plane, centres, pool, n_components=2, metric="euclidean", generator=0)
    assert s_on.delta_L["alpha"].shape == (4,)
    assert s_on.delta_L["close"].shape == (4, 5) and s_on.delta_L["far"].shape == (4, 10)
    assert s_on.omega["far"].shape == (4, 10)
    for s in (s_on, s_off):
        for v in s.delta_L.values():
            assert (v <= 0).all()
        for v in s.omega.values():
            assert (v <= 1 + 1e-6).all()
    # the centre itself is never its own neighbour
    assert not (s_on.sets.ref == torch.arange(4)[:, None]).any()
    # in the plane: far more likely than off the plane
    assert (s_on.delta_L["alpha"] > s_off.delta_L["alpha"]).all()
    m = s_on.medians()
    assert set(m) == {(a, b) for a in ("delta_L", "omega") for b in ("alpha", "close", "far")}
    assert m[("omega", "far")] == pytest.approx(float(s_on.omega["far"].double().median()))
    assert s_on.delta_L["alpha"].dtype == torch.float64                 # scores in float64 by default
    f32 = ns.inlier_scores(on_plane, centres, pool, n_components=2, metric="euclidean", generator=0,
                           score_dtype=None)
    assert f32.delta_L["alpha"].dtype == torch.float32
    assert torch.allclose(f32.delta_L["alpha"].double(), s_on.delta_L["alpha"], rtol=1e-3, atol=1e-3)
    # same generator → same sets
    again = ns.inlier_scores(on_plane, centres, pool, n_components=2, metric="euclidean", generator=0)
    assert torch.equal(again.sets.ref, s_on.sets.ref)


def test_inlier_scores_rejects_mismatched_shapes():
    pool = torch.randn(80, 5)
    with pytest.raises(ValueError, match="same shape"):
        ns.inlier_scores(pool[:3], pool[:2], pool)


def test_class_nn_matches_brute_force_with_exclusion():
    feats, labels = _pool(6)
    q = feats[:6] + 0.1
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    exclude = torch.tensor([-1, 3, -1, int(torch.nonzero(labels == 0)[0]), -1, -1])
    d, i = ns.class_nn(q, classes, feats, labels, exclude=exclude)
    for r in range(6):
        cand = torch.nonzero(labels == classes[r]).flatten()
        cand = cand[cand != exclude[r]]
        dist = torch.linalg.vector_norm(feats[cand] - q[r], dim=1)
        assert i[r].item() == cand[dist.argmin()].item()
        assert d[r].item() == pytest.approx(dist.min().item(), rel=1e-5)
    # a guide's distance to its nearest *other* class point
    g = torch.tensor([0, 1])
    d_self, i_self = ns.class_nn(feats[g], labels[g], feats, labels)
    assert torch.equal(i_self, g) and torch.allclose(d_self, torch.zeros(2))
    d_other, i_other = ns.class_nn(feats[g], labels[g], feats, labels, exclude=g)
    assert not torch.equal(i_other, g) and (d_other > 0).all()
    with pytest.raises(ValueError, match="one entry per query"):
        ns.class_nn(q, classes, feats, labels, exclude=torch.tensor([0]))


def test_classes_without_reference_points_are_refused_clearly():
    """A class with no (or too few) pool points is named in the error, not a crash inside knn: an ImageNet
    network's prediction on an ILSVRC-subset folder can be a class the folder does not hold (Fig. 4 bis)."""
    feats, labels = _pool(classes=3)
    labels = torch.where(labels == 1, torch.full_like(labels, 281), labels)        # sparse labels {0, 2, 281}
    ranks = ns.adversary_nn_ranks(feats[:2], torch.tensor([281, 2]), feats, labels)
    assert ranks.rank_adv.shape == (2,)
    with pytest.raises(ValueError, match=r"classes \[1\] have fewer than 4"):
        ns.adversary_nn_ranks(feats[:2], torch.tensor([1, 2]), feats, labels)
    with pytest.raises(ValueError, match=r"classes \[500\] have fewer than 1"):
        ns.class_nn(feats[:1], torch.tensor([500]), feats, labels)
    few = labels.clone()
    few[few == 2] = 0
    few[torch.nonzero(labels == 2).flatten()[:2]] = 2                                # class 2: two points only
    with pytest.raises(ValueError, match=r"classes \[2\] have fewer than 4"):
        ns.adversary_nn_ranks(feats[:1], torch.tensor([2]), feats, few)
