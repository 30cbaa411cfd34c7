"""featadv_core.repro: seeding, the result cache, claims tables."""
from __future__ import annotations

import random

import numpy as np
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
    table = repro.claims_table([repro.Claim("guide label", "95%", f"{rate:.0%}", rate >= 0.9, "≥ 90%")])
    assert table.loc[0, "replicated"] == "✓ yes" and table.loc[0, "ours"] == "93%"
