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


def test_folder_dataset_labels_and_names(tmp_path):
    """load_images and class_names agree on a folder: ImageNet names for an ILSVRC subset, folder names otherwise."""
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("n02123045", "n01440764"):
            (tmp_path / "ilsvrc" / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp_path / "ilsvrc" / split / cls / "0.png")
        (tmp_path / "faces" / split / "alice").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "faces" / split / "alice" / "0.png")
    _, y = runs.load_images(str(tmp_path / "ilsvrc"), "test")
    names = runs.class_names(str(tmp_path / "ilsvrc"), "test")
    assert [names[i] for i in y.tolist()] == ["tench", "tabby"]
    _, y = runs.load_images(str(tmp_path / "faces"), "train")
    assert y.tolist() == [0] and runs.class_names(str(tmp_path / "faces")) == ["alice"]
    assert runs.class_names("cifar10")[3] == "cat"


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


_SLOW_RUN = r'''
import sys, time, torch
from featadv_core import runs

def slow(model, xs, other, *, progress=True, log):
    with open(log, "a") as fh:
        fh.write(f"{int(xs[0, 0, 0, 0])}\n")   # the first row of the chunk being computed
    time.sleep(0.4)
    return xs * 2 + other

runs.ATTACKS["slow"] = slow
torch.manual_seed(0)
model = torch.nn.Linear(1, 1)
x = torch.arange(10.0).view(10, 1, 1, 1)
out = runs.run_attack("slow", model, x, x, batch_size=2, progress=False, log=sys.argv[2])
torch.save(out, sys.argv[1])
'''


def test_a_killed_run_resumes_at_the_unfinished_chunks(tmp_path):
    """SIGKILL in the middle of a chunked cached run; the rerun computes only what is missing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script, log = tmp_path / "slow_run.py", tmp_path / "log"  # one log: it is an attack option, so in the key
    script.write_text(_SLOW_RUN)
    env = dict(os.environ, FEATADV_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    results = tmp_path / "cache" / "results"
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out1.pt"), str(log)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(results.glob("slow-*.pt"))) < 2:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(list(results.glob("slow-*.pt")))
    assert 2 <= done < 5 and not (tmp_path / "out1.pt").exists(), "killed before the end"
    started = [int(v) for v in log.read_text().split()]
    log.write_text("")
    subprocess.run([sys.executable, str(script), str(tmp_path / "out2.pt"), str(log)], env=env, check=True)
    recomputed = [int(v) for v in log.read_text().split()]
    assert len(recomputed) == 5 - done, "only the unfinished chunks are computed again"
    assert sorted(set(started[:done]) | set(recomputed)) == [0, 2, 4, 6, 8]
    x = torch.arange(10.0).view(10, 1, 1, 1)
    assert torch.equal(torch.load(tmp_path / "out2.pt"), x * 3)
    assert all(not p.name.endswith(".tmp") or p.name.startswith(".") for p in results.iterdir())


def test_cached_chunks_reuses_chunks_of_a_longer_run(monkeypatch):
    calls = []

    def double(x):
        calls.append(len(x))
        return x * 2

    x = torch.arange(6.0)
    a = runs.cached_chunks("dbl", {}, [x[:4]], double, batch_size=2, code=(double,), progress=False)
    b = runs.cached_chunks("dbl", {}, [x], double, batch_size=2, code=(double,), progress=False)
    assert calls == [2, 2, 2] and torch.equal(b, x * 2) and torch.equal(a, x[:4] * 2)
    with pytest.raises(ValueError, match="same length"):
        runs.cached_chunks("dbl", {}, [x, x[:3]], double, batch_size=2)


def test_run_deepfool_matches_the_attack_and_caches_its_chunks(tiny_lenet, monkeypatch):
    from featadv_core import attacks

    calls = []
    real = attacks.deepfool

    def spy(model, xs, **kw):
        calls.append(len(xs))
        return real(model, xs, **kw)

    monkeypatch.setattr(attacks, "deepfool", spy)
    torch.manual_seed(0)
    x = torch.rand(5, 1, 28, 28)
    q = torch.linalg.qr(torch.randn(784, 20)).Q
    a = runs.run_deepfool(tiny_lenet, x, basis=q, batch_size=2, max_iter=5, box=None, progress=False)
    b = runs.run_deepfool(tiny_lenet, x, basis=q, batch_size=2, max_iter=5, box=None, progress=False)
    assert calls == [2, 2, 1]  # the second run read every chunk from the cache
    _, ref = real(tiny_lenet, x, basis=q, max_iter=5, box=None, details=True)
    torch.testing.assert_close(a["perturbation"], ref.perturbation, rtol=1e-5, atol=1e-6)
    assert torch.equal(a["success"], b["success"]) and set(a) == {"perturbation", "clean_label", "label", "iterations",
                                                                  "success", "norm"}


def test_run_curvatures_caches_each_class(tiny_lenet, monkeypatch):
    calls = []
    real = runs.principal_curvatures

    def spy(model, x, target, **kw):
        calls.append(target)
        return real(model, x, target, **kw)

    monkeypatch.setattr(runs, "principal_curvatures", spy)
    torch.manual_seed(1)
    x = torch.rand(12, 1, 28, 28)
    opts = dict(h=0.5, n_samples=6, method="topk", k=2, oversample=2, depth=1, df_max_iter=20, progress=False)
    first = runs.run_curvatures(tiny_lenet, x, [0, 1], **opts)
    again = runs.run_curvatures(tiny_lenet, x, [1], **opts)
    assert calls == [0, 1] and torch.equal(first[1].values, again[1].values)
    assert first[0].vectors.shape == (784, 4)
