"""LOTS, FGS, FGV, hot/cold and their shared 8-bit line search (Rozsa et al. 2016/2017), on tiny models."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import features
from featadv_core.attacks import (KINDS, all_attempts, apply_direction, fgs, fgv, gradient_direction, hot_cold,
                                  hot_cold_direction, line_search, lots, lots_direction, lots_iterative, lots_self,
                                  lots_self_direction, predict_labels, scale_grid, unit_linf)
from featadv_core.models import architectures
from featadv_core.models.architectures import NamedLayerNet, Normalize, sequential

pytestmark = pytest.mark.usefixtures("one_thread")


def _lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return architectures.lenet().eval()


def _smooth(seed: int = 0) -> nn.Module:
    """A small smooth (tanh) network with named layers: directional derivatives are meaningful."""
    torch.manual_seed(seed)
    net = sequential([("flatten", nn.Flatten()), ("fc1", nn.Linear(16, 12)), ("act", nn.Tanh()),
                      ("fc2", nn.Linear(12, 3))])
    return NamedLayerNet(Normalize((0.0,), (1.0,)), net, {"fc1": "net.fc1", "hidden": "net.act", "fc2": "net.fc2"},
                         (1, 4, 4)).eval().double()


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    net = sequential([("flatten", nn.Flatten()), ("fc", nn.Linear(weight.shape[1], weight.shape[0]))])
    with torch.no_grad():
        net.fc.weight.copy_(weight)
        net.fc.bias.copy_(bias)
    return NamedLayerNet(Normalize((0.0,), (1.0,)), net, {"fc": "net.fc"}, (1, 2, 2)).eval().double()


def _grid_images(n: int, seed: int, shape=(1, 28, 28), dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *shape), generator=gen).double() / 255).to(dtype)


def _on_grid(x: torch.Tensor) -> bool:
    k = x.double() * 255
    return bool((k - k.round()).abs().max() < 1e-4) and bool(((x >= 0) & (x <= 1)).all())


def _pair_of_other_classes(model, n, seed):
    """n origins and n targets that ``model`` puts in different classes."""
    x = _grid_images(8 * n, seed)
    y = predict_labels(model, x)
    origins, targets = [], []
    for i in range(len(x)):
        j = int((y != y[i]).nonzero().flatten()[0]) if bool((y != y[i]).any()) else None
        if j is not None:
            origins.append(i)
            targets.append(j)
        if len(origins) == n:
            break
    assert len(origins) == n, "the random model puts every image into one class"
    return x[origins], x[targets]


# ----------------------------------------------------------------------------------- directions

def test_lots_direction_of_a_linear_layer_is_w_transpose_times_the_difference():
    torch.manual_seed(1)
    w, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    model = _linear(w, b)
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64)
    f_t = torch.randn(5, 3, dtype=torch.float64)
    eta = lots_direction(model, x, f_t, layer="fc")
    f_o = x.flatten(1) @ w.T + b
    assert torch.allclose(eta.flatten(1), (f_t - f_o) @ w, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), model_seed=st.integers(0, 3))
def test_lots_decreases_the_feature_distance_to_the_target_for_small_steps(seed, model_seed):
    model = _smooth(model_seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    xt = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    for layer in ("fc1", "hidden", "fc2"):
        f_t = features.forward_to(model, xt, layer).detach()
        d, _ = unit_linf(lots_direction(model, x, f_t, layer=layer))
        with torch.no_grad():
            before = (features.forward_to(model, x, layer) - f_t).flatten(1).norm(dim=1)
            after = (features.forward_to(model, x + 1e-4 * d, layer) - f_t).flatten(1).norm(dim=1)
        assert bool((after < before).all()), layer


def test_magnify_grows_and_reduce_shrinks_the_representation():
    model = _smooth(1)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        norm = lambda z: features.forward_to(model, z, "hidden").flatten(1).norm(dim=1)  # noqa: E731
        base = norm(x)
        up = norm(x + 1e-4 * unit_linf(lots_self_direction(model, x, layer="hidden", sign=1))[0])
        down = norm(x + 1e-4 * unit_linf(lots_self_direction(model, x, layer="hidden", sign=-1))[0])
    assert bool((up > base).all()) and bool((down < base).all())
    with pytest.raises(ValueError, match="sign"):
        lots_self_direction(model, x, layer="hidden", sign=2)


def test_gradient_directions_ascend_the_loss_and_hot_cold_its_weighted_logits():
    model = _smooth(2)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = predict_labels(model, x)
    loss = lambda z: nn.functional.cross_entropy(model(z), y, reduction="none")  # noqa: E731
    for kind in ("sign", "value"):
        d, _ = unit_linf(gradient_direction(model, x, y, kind=kind))
        with torch.no_grad():
            assert bool((loss(x + 1e-4 * d) > loss(x)).all()), kind
    assert torch.equal(gradient_direction(model, x, y, kind="sign"), gradient_direction(model, x, y, kind="value").sign())
    hot = (y + 1) % 3
    with torch.no_grad():
        h = model(x)
    rows = torch.arange(len(x))
    w = torch.zeros_like(h)
    w[rows, hot] = h[rows, hot].abs()
    w[rows, y] = -h[rows, y]
    d, _ = unit_linf(hot_cold_direction(model, x, y, hot))
    with torch.no_grad():
        assert bool(((model(x + 1e-4 * d) * w).sum(1) > (h * w).sum(1)).all())
    with pytest.raises(ValueError, match="hot class"):
        hot_cold_direction(model, x, y, y)


# ----------------------------------------------------------------------------------- line search

def test_scale_grid_is_geometric_in_whole_grey_levels():
    g = scale_grid(10.0, 30) * 255
    assert g[0] == 1 and g[-1] == 2550 and torch.equal(g, g.round()) and bool((g.diff() > 0).all())
    assert len(scale_grid(1.0, 30)) < 30
    with pytest.raises(ValueError):
        scale_grid(0.001, 30)


def test_line_search_finds_the_crossing_of_a_monotone_toy_within_the_bisection_tolerance():
    # logit1 - logit0 = x·1 - 1.3: along d = +1 everywhere, the label flips once, at a known scale
    model = _linear(torch.tensor([[0.0] * 4, [1.0] * 4], dtype=torch.float64), torch.tensor([0.0, -1.3], dtype=torch.float64))
    x = torch.full((1, 1, 2, 2), 26 / 255, dtype=torch.float64)
    d = torch.ones_like(x)
    res = line_search(model, x, d, y_orig=torch.tensor([0]), eps_max=1.0, grid_points=12, bisect_steps=12)
    assert bool(res.success[0]) and int(res.labels[0]) == 1
    # 4·k/255 > 1.3 first holds at k = 83 grey levels, i.e. round(26 + 255ε) = 83: ε* = 56.5/255
    eps_star = 56.5 / 255
    assert eps_star <= float(res.scale[0]) <= eps_star + 1.0 / 2**12 + 1e-12
    assert int(predict_labels(model, apply_direction(x, d, eps_star - 1e-6))[0]) == 0
    assert float(res.linf[0]) == 57 and float(res.l2[0]) == pytest.approx(57 * 2)
    assert _on_grid(res.images)


def test_zero_direction_and_an_unreachable_criterion_are_failures_returning_the_origin():
    model = _lenet()
    x = _grid_images(3, 0)
    y = predict_labels(model, x)
    res = line_search(model, x, torch.zeros_like(x), y_orig=y)
    assert not bool(res.success.any()) and bool(res.zero_direction.all())
    assert torch.equal(res.images, x) and bool((res.l2 == 0).all()) and bool(res.scale.isnan().all())
    # a target class the toy can never reach
    model = _linear(torch.tensor([[0.0] * 4, [-1.0] * 4], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64))
    xs = torch.full((1, 1, 2, 2), 128 / 255, dtype=torch.float64)
    res = line_search(model, xs, torch.ones_like(xs), y_orig=torch.tensor([0]), target=torch.tensor([1]), eps_max=1.0)
    assert not bool(res.success[0]) and not bool(res.zero_direction[0]) and torch.equal(res.images, xs)


def test_batched_line_search_equals_one_attempt_at_a_time():
    model = _lenet()
    x = _grid_images(6, 1)
    y = predict_labels(model, x)
    eta = gradient_direction(model, x, y, kind="value")
    caps = torch.tensor([10.0, 1.0, 10.0, 2.0, 10.0, 0.5], dtype=torch.float64)
    batched = line_search(model, x, eta, y_orig=y, eps_max=caps, grid_points=16, bisect_steps=6)
    for i in range(len(x)):
        one = line_search(model, x[i:i + 1], eta[i:i + 1], y_orig=y[i:i + 1], eps_max=caps[i:i + 1],
                          grid_points=16, bisect_steps=6)
        assert torch.equal(one.images[0], batched.images[i]) and bool(one.success[0] == batched.success[i])
        assert float(batched.linf[i]) <= float(caps[i]) * 255 + 1e-9


def test_line_search_rejects_bad_input():
    model = _lenet()
    x = _grid_images(2, 2)
    y = predict_labels(model, x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        line_search(model, x + 2, torch.ones_like(x), y_orig=y)
    with pytest.raises(ValueError, match="shape"):
        line_search(model, x, torch.ones(2, 1, 27, 27), y_orig=y)
    with pytest.raises(ValueError, match="y_orig"):
        line_search(model, x, torch.ones_like(x), y_orig=y[:1])
    with pytest.raises(ValueError, match="eps_max"):
        line_search(model, x, torch.ones_like(x), y_orig=y, eps_max=0.001)


# ----------------------------------------------------------------------------------- attacks

@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), stop=st.sampled_from(["target", "label_change"]),
       layer=st.sampled_from(["conv1", "conv2", "ip1", "ip2"]))
def test_lots_images_are_8_bit_and_meet_the_criterion_they_report(seed, stop, layer):
    model = _lenet()
    xo, xt = _pair_of_other_classes(model, 3, seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv, res = lots(model, xo, xt, layer=layer, stop=stop, grid_points=12, bisect_steps=4, details=True)
    assert x_adv.shape == xo.shape and x_adv.dtype == xo.dtype and _on_grid(x_adv)
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    labels = predict_labels(model, x_adv)
    assert torch.equal(labels, res.labels)
    y_o, y_t = predict_labels(model, xo), predict_labels(model, xt)
    met = labels == y_t if stop == "target" else labels != y_o
    assert bool((met[res.success]).all())
    assert torch.equal(x_adv[~res.success], xo[~res.success])
    delta = (x_adv.double() - xo.double()).flatten(1) * 255
    assert torch.allclose(res.l2, delta.norm(dim=1)) and torch.allclose(res.linf, delta.abs().amax(1))
    assert torch.equal(lots(model, xo, xt, layer=layer, stop=stop, grid_points=12, bisect_steps=4), x_adv)


def test_lots_rejects_bad_input_with_clear_errors():
    model = _lenet()
    xo, xt = _pair_of_other_classes(model, 2, 0)
    with pytest.raises(ValueError, match="valid layers"):
        lots(model, xo, xt, layer="conv9")
    with pytest.raises(ValueError, match="another class"):
        lots(model, xo, xo, layer="conv1")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lots(model, xo * 3, xt, layer="conv1")
    with pytest.raises(ValueError, match="same shape"):
        lots(model, xo, xt[:1], layer="conv1")
    with pytest.raises(ValueError, match="stop"):
        lots(model, xo, xt, layer="conv1", stop="nearest")


def test_iterative_lots_stays_on_the_grid_moves_one_level_per_step_and_stops_at_the_target():
    model = _lenet()
    xo, xt = _pair_of_other_classes(model, 3, 7)
    x_adv, res = lots(model, xo, xt, layer="ip2", iterative=True, max_steps=300, details=True)
    assert _on_grid(x_adv)
    y_t = predict_labels(model, xt)
    assert bool((predict_labels(model, x_adv)[res.success] == y_t[res.success]).all())
    assert bool((res.linf <= res.steps.double() + 1e-3).all())  # one grey level per step at most
    assert bool(res.success.any()), "a random LeNet should be steerable within 300 steps"


def test_iterative_lots_decreases_the_feature_distance_monotonically_on_a_smooth_toy():
    model = _smooth(4)
    gen = torch.Generator().manual_seed(8)
    x = (torch.randint(60, 196, (4, 1, 4, 4), generator=gen).double() / 255)
    xt = torch.rand(4, 1, 4, 4, generator=gen, dtype=torch.float64)
    f_t = features.forward_to(model, xt, "hidden").detach()
    y = predict_labels(model, x)
    dists = []
    for k in range(0, 6):
        res = lots_iterative(model, x, f_t, layer="hidden", y_orig=y, target=torch.full_like(y, 99), max_steps=k)
        with torch.no_grad():
            dists.append((features.forward_to(model, res.images, "hidden") - f_t).flatten(1).norm(dim=1))
        assert _on_grid(res.images) and bool((res.steps == k).all())
    d = torch.stack(dists)
    assert bool((d[1:] < d[:-1] + 1e-12).all())


def test_iterative_lots_detects_a_saturated_fixed_point_and_a_two_cycle():
    """Identity features on a 2×2 image, one grey level per step. (a) Every pixel at 255 and a target above it:
    the rounded, clipped step changes nothing — stalled at once. (b) A target half a grey level above pixel 0:
    the iterate steps up one level, then back — a 2-cycle, stalled after one step. Neither runs to max_steps."""
    model = _linear(torch.eye(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    never = torch.tensor([99])
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    res = lots_iterative(model, x, torch.full((1, 4), 2.0, dtype=torch.float64), layer="fc", y_orig=predict_labels(model, x),
                         target=never, max_steps=50)
    assert bool(res.stalled[0]) and int(res.steps[0]) == 0 and not bool(res.success[0]) and torch.equal(res.images, x)
    x = torch.full((1, 1, 2, 2), 100 / 255, dtype=torch.float64)
    f_t = x.flatten(1).clone()
    f_t[0, 0] += 0.5 / 255
    res = lots_iterative(model, x, f_t, layer="fc", y_orig=predict_labels(model, x), target=never, max_steps=50)
    assert bool(res.stalled[0]) and int(res.steps[0]) == 1 and not bool(res.success[0])
    assert round(float(res.images[0, 0, 0, 0]) * 255) == 101  # the iterate it stalled on: its next step goes back
    moving = lots_iterative(model, x, f_t + 10 / 255, layer="fc", y_orig=predict_labels(model, x), target=never,
                            max_steps=5)
    assert not bool(moving.stalled[0]) and int(moving.steps[0]) == 5  # a target far away: no stall, out of steps


def test_magnify_at_a_fixed_scale_reports_the_nominal_scale_and_actual_norms():
    model = _lenet()
    x = _grid_images(4, 3)
    x_adv, res = lots_self(model, x, layer="conv1", sign=1, eps=128 / 255, details=True)
    assert _on_grid(x_adv) and bool((res.linf <= 128 + 1e-9).all())
    assert torch.equal(res.success, predict_labels(model, x_adv) != predict_labels(model, x))
    x_min, res_min = lots_self(model, x, layer="ip1", sign=-1, grid_points=12, bisect_steps=4, details=True)
    assert bool((predict_labels(model, x_min)[res_min.success] != predict_labels(model, x)[res_min.success]).all())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_fgs_fgv_and_hot_cold_change_the_label_when_they_report_success(seed):
    model = _lenet()
    x = _grid_images(3, seed)
    y = predict_labels(model, x)
    for attack in (fgs, fgv):
        x_adv, res = attack(model, x, grid_points=12, bisect_steps=4, details=True)
        assert _on_grid(x_adv) and bool((predict_labels(model, x_adv)[res.success] != y[res.success]).all())
    x_s, r_s = fgs(model, x, grid_points=12, bisect_steps=4, details=True)
    assert bool((r_s.linf <= 255).all())
    hot = (y + 1) % 10
    x_h, r_h = hot_cold(model, x, hot, stop="target", grid_points=12, bisect_steps=4, details=True)
    assert bool((predict_labels(model, x_h)[r_h.success] == hot[r_h.success]).all())


def test_all_attempts_has_table_1s_47_attempts_per_origin_matching_the_single_attacks():
    from featadv_core.models import zoo

    model = zoo.get("lenet-mnist", device="cpu")  # the shipped checkpoint: every class is reachable
    x = _grid_images(40, 5)
    y = predict_labels(model, x)
    # one target image per class: steer a grey image into each class by iterative LOTS on the logits
    x0 = torch.full((10, 1, 28, 28), 128 / 255)
    hot = torch.arange(10)
    res = lots_iterative(model, x0, 30 * nn.functional.one_hot(hot, 10).float(), layer="ip2",
                         y_orig=predict_labels(model, x0), target=hot, max_steps=400)
    xt = res.images
    assert bool(res.success.all()) and torch.equal(predict_labels(model, xt), hot)
    with pytest.raises(ValueError, match="classified as c"):
        all_attempts(model, x[:2], xt.flip(0), layers=["conv1"])
    layers = ["conv1", "ip2"]
    out = all_attempts(model, x[:2], xt, layers=layers, grid_points=10, bisect_steps=3)
    assert len(out["success"]) == 2 * (1 + 1 + 9 + 9 * len(layers))
    assert set(out["kind"].tolist()) == set(range(len(KINDS)))
    sel = (out["kind"] == KINDS.index("lots")) & (out["layer"] == 1) & (out["origin"] == 0)
    ref = lots(model, x[:1].expand(9, -1, -1, -1), xt[out["target"][sel]], layer="ip2", stop="label_change",
               grid_points=10, bisect_steps=3)
    assert torch.equal(out["images"][sel], torch.round(ref.double() * 255).to(torch.uint8))
