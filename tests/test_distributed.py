"""torchrun: 2 gloo processes give bit-identical results to 1, each rank computing only its share."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from featadv_core import distributed

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    from featadv_core import attacks, distributed, repro
    from featadv_core.models import architectures

    out_dir = sys.argv[1]
    torch.manual_seed(0)
    model = architectures.lenet().eval()
    x = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(10) % 10
    computed = []

    def attack(xs, ys):
        computed.append(len(xs))
        gen = torch.Generator().manual_seed(int(repro.tensor_hash(xs)[:12], 16))
        return attacks.pgd(model, xs, ys, eps=8 / 255, steps=3, step_size=2 / 255, generator=gen)

    adv = repro.cached_chunks("pgd-test", {"eps": 8}, [x, y], attack, batch_size=3, model=model,
                              code=(attacks.pgd,))
    solo_calls = []

    def summary():
        solo_calls.append(1)
        return {"mean": adv.mean(), "n": len(adv)}

    value = repro.cached("summary-test", {"n": 10}, summary)
    rank, size = distributed.world()
    torch.save({"adv": adv, "value": value}, os.path.join(out_dir, f"result-{rank}.pt"))
    with open(os.path.join(out_dir, f"counts-{rank}.json"), "w") as fh:
        json.dump({"chunks": computed, "summary": len(solo_calls), "size": size}, fh)
''')


def _run(tmp_path, name, nproc):
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, FEATADV_CACHE=str(tmp_path / f"cache-{name}"), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
           if nproc > 1 else [sys.executable])
    subprocess.run(cmd + [str(script), str(out)], env=env, check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_and_share_the_work(tmp_path):
    one = _run(tmp_path, "one", 1)
    two = _run(tmp_path, "two", 2)
    ref = torch.load(one / "result-0.pt")
    for r in (0, 1):
        got = torch.load(two / f"result-{r}.pt")
        assert torch.equal(got["adv"], ref["adv"]), f"rank {r}: chunked attack differs from one process"
        assert torch.equal(got["value"]["mean"], ref["value"]["mean"])
    counts = [json.loads((two / f"counts-{r}.json").read_text()) for r in (0, 1)]
    assert counts[0]["size"] == counts[1]["size"] == 2
    assert counts[0]["chunks"] == [3, 3] and counts[1]["chunks"] == [3, 1], "rank r computes chunks i ≡ r mod 2"
    assert [c["summary"] for c in counts] == [1, 0], "one cached result is computed once, by rank 0"
    single = json.loads((one / "counts-0.json").read_text())
    assert single == {"chunks": [3, 3, 3, 1], "summary": 1, "size": 1}


def test_one_process_knows_no_ranks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.world() == (0, 1) and distributed.is_main()
    distributed.barrier()   # a no-op: torch.distributed is never initialised
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.world() == (1, 2)
    with distributed.solo():
        assert distributed.world() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK"):
        distributed.world()


TRAIN = textwrap.dedent('''
    import os, sys
    import torch
    from featadv_core import distributed
    from featadv_core.models import architectures
    from featadv_core.models.train import TrainConfig, train_classifier

    torch.manual_seed(0)
    model = architectures.lenet()
    if distributed.rank() == 1:     # another start on rank 1: rank 0's weights must win
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    x = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    y = torch.arange(24) % 10
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, crop_pad=2, flip=True)
    train_classifier(model, x, y, config)
    torch.save(model.state_dict(), os.path.join(sys.argv[1], f"weights-{distributed.rank()}.pt"))
    from featadv_core.models.adversarial_training import pgd3_loss
    from featadv_core.models.trades import trades_k3_loss
    for name, loss in (("pgd3", pgd3_loss), ("trades", trades_k3_loss)):   # input gradients inside the loss
        train_classifier(model, x, y, config, loss_fn=loss)
        torch.save(model.state_dict(), os.path.join(sys.argv[1], f"{name}-{distributed.rank()}.pt"))
''')


@pytest.mark.slow
def test_data_parallel_training_step_matches_one_process(tmp_path):
    """Two ranks, each on half of every batch with averaged gradients, take the single process's steps."""
    def run(name, nproc):
        out = tmp_path / name
        out.mkdir()
        script = tmp_path / "train.py"
        script.write_text(TRAIN)
        env = dict(os.environ, FEATADV_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
               if nproc > 1 else [sys.executable])
        subprocess.run(cmd + [str(script), str(out)], env=env, check=True, capture_output=True, timeout=300)
        return out

    ref = torch.load(run("one", 1) / "weights-0.pt")
    two = run("two", 2)
    w0, w1 = torch.load(two / "weights-0.pt"), torch.load(two / "weights-1.pt")
    for k in ref:
        assert torch.equal(w0[k], w1[k]), f"{k}: the replicas diverged"
        torch.testing.assert_close(w0[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{k}: differs from one process")
    for name in ("pgd3", "trades"):   # Madry's and TRADES' losses train under DDP, replicas in step
        a, b = torch.load(two / f"{name}-0.pt"), torch.load(two / f"{name}-1.pt")
        assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["net.conv1.weight"], w0["net.conv1.weight"])


@pytest.mark.slow
def test_a_notebook_under_torchrun_returns_one_process_result(tmp_path):
    """The documented entry point: papermill in every rank; the cached result is the same on both,
    each rank's kernel computed only its chunks, and rank 0 writes the page."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("n = 6", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, torch\nfrom featadv_core import repro\ncalls = []\n"
            "x = torch.arange(float(n))\n"
            "out = repro.cached_chunks('nb-test', {}, [x], lambda c: calls.append(len(c)) or c * 2, batch_size=2)\n"
            "torch.save({'out': out, 'calls': calls}, f\"result-{os.environ.get('RANK', '0')}.pt\")"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    env = dict(os.environ, FEATADV_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "featadv_core.run_notebook", str(path), str(tmp_path / "out" / "nb.ipynb"), "-p", "n", "7"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    r0, r1 = torch.load(tmp_path / "result-0.pt"), torch.load(tmp_path / "result-1.pt")
    assert torch.equal(r0["out"], torch.arange(7.0) * 2) and torch.equal(r1["out"], r0["out"])
    assert r0["calls"] == [2, 2] and r1["calls"] == [2, 1], "chunks 0, 2 on rank 0; 1, 3 on rank 1"
    assert (tmp_path / "out" / "nb.ipynb").is_file() and (tmp_path / "out" / "nb.rank1.ipynb").is_file()
