"""featadv_core.runs: chunked features, predictions and cached attack runs."""
from __future__ import annotations

import pytest
import torch

from featadv_core import runs


def test_batched_features_match_unbatched(tiny_lenet):
    x = torch.rand(10, 1, 28, 28)
    feats = runs.batched_features(tiny_lenet, x, ["pool2", "ip1"], batch_size=3)
    assert feats["pool2"].shape == (10, 800) and feats["ip1"].shape == (10, 500)
    assert torch.allclose(feats["ip1"], runs.batched_features(tiny_lenet, x, "ip1")["ip1"], atol=1e-6)


def test_predict(tiny_lenet):
    x = torch.rand(7, 1, 28, 28)
    assert torch.equal(runs.predict(tiny_lenet, x, batch_size=2), tiny_lenet(x).argmax(1))


def test_run_attack_is_cached_and_chunked(tiny_lenet, monkeypatch):
    calls = []
    real = runs.ATTACKS["feature_opt"]

    def spy(model, xs, xg, **kw):
        calls.append(len(xs))
        return real(model, xs, xg, **kw)

    monkeypatch.setitem(runs.ATTACKS, "feature_opt", spy)
    torch.manual_seed(0)
    xs, xg = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    opts = dict(layer="ip1", eps=0.05, steps=5, progress=False)
    a = runs.run_attack("feature_opt", tiny_lenet, xs, xg, batch_size=2, **opts)
    assert calls == [2, 2, 1] and a.shape == xs.shape
    b = runs.run_attack("feature_opt", tiny_lenet, xs, xg, batch_size=2, **opts)
    assert calls == [2, 2, 1] and torch.equal(a, b)
    assert (a - xs).abs().max() <= 0.05


def test_unknown_attack_and_dataset(tiny_lenet):
    with pytest.raises(ValueError, match="valid: feature_opt"):
        runs.run_attack("deepfool", tiny_lenet, torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="neither"):
        runs.load_images("no-such-dataset", "train")


def test_tensor_hash():
    x = torch.rand(3, 4)
    assert runs.tensor_hash(x) == runs.tensor_hash(x.clone())
    assert runs.tensor_hash(x) != runs.tensor_hash(x.double())


def test_cached_features_computes_once(tiny_lenet, monkeypatch):
    calls = []
    real = runs.batched_features

    def spy(model, x, layers, **kw):
        calls.append(tuple(layers))
        return real(model, x, layers, **kw)

    monkeypatch.setattr(runs, "batched_features", spy)
    x = torch.rand(6, 1, 28, 28)
    a = runs.cached_features(tiny_lenet, x, "ip1", progress=False)
    b = runs.cached_features(tiny_lenet, x, ["ip1"], progress=False)
    assert calls == [("ip1",)] and torch.equal(a["ip1"], b["ip1"])
    assert torch.allclose(a["ip1"], real(tiny_lenet, x, "ip1")["ip1"])
    runs.cached_features(tiny_lenet, x[:5], "ip1", progress=False)
    assert len(calls) == 2, "other images, other entry"
