"""Benchmark: Table 1's attempts (Rozsa et al. 2017) — batched directions + line search vs the naive loop.

For the same origins (correctly classified MNIST test digits) and the same 10 LOTS targets,
generates every attempt of Table 1 — 1 FGS, 1 FGV, 9 hot/cold and 36 LOTS (9 targets × 4
layers) per origin — three ways:

* **batched** — :func:`featadv_core.attacks.all_attempts`: one backpropagation per kind for all
  origins and targets, one line search for all attempts together;
* **naive loop** — the method as described: per origin, per attempt, compute that attempt's
  direction and walk its line search one scale at a time (the core's own direction functions and
  line search, called with one attempt), the same grid and bisection;
* **bare forwards** — only the forward passes the batched line search made (counted by a hook),
  in chunks of 1,024: the floor for any method that evaluates the same candidates;

and, where a peer implements one of the attacks, the peer: the Adversarial Robustness Toolbox's
``FastGradientMethod(minimal=True)`` (FGSM with a linear search of step 1/255 up to 1; its
images are not rounded to 8 bits, so its results differ by construction; ``pip install
adversarial-robustness-toolbox``, or ``--skip-art``).

Prints attempts per second, the ratio to the naive loop and to the bare forwards, and whether
the batched and naive results are identical (images, success, labels).

    FEATADV_DATA_DIR=/work/shared/data python benchmarks/lots_attempts.py --origins 20
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from featadv_core import data, models, pairs
from featadv_core.attacks import (KINDS, all_attempts, gradient_direction, hot_cold_direction, line_search,
                                  lots_direction, other_classes, predict_labels)
from featadv_core.devices import resolve_device
from featadv_core.features import forward_to
from report import emit, table

LAYERS = ("conv1", "conv2", "ip1", "ip2")


def naive(model, x, x_targets, *, grid_points, bisect_steps):
    """Every attempt on its own: its direction (one origin, one target) and its own line search."""
    y = predict_labels(model, x)
    images, success, labels = [], [], []
    feats = {l: forward_to(model, x_targets, l).detach() for l in LAYERS}

    def search(xo, eta, yo, cap):
        r = line_search(model, xo, eta, y_orig=yo, eps_max=cap, grid_points=grid_points, bisect_steps=bisect_steps)
        images.append(r.images)
        success.append(r.success)
        labels.append(r.labels)

    for i in range(len(x)):
        xo, yo = x[i:i + 1], y[i:i + 1]
        g = gradient_direction(model, xo, yo, kind="value")
        search(xo, g.sign(), yo, 1.0)
        search(xo, g, yo, 10.0)
        _, others = other_classes(yo, 10)
        for c in others.tolist():
            search(xo, hot_cold_direction(model, xo, yo, torch.tensor([c])), yo, 10.0)
        for layer in LAYERS:
            for c in others.tolist():
                search(xo, lots_direction(model, xo, feats[layer][c:c + 1], layer=layer), yo, 10.0)
    return torch.cat(images), torch.cat(success), torch.cat(labels)


def art_fgsm(model, x, device):
    """ART's minimal FGSM on the zoo model (peer row); returns seconds, success and L∞ in grey levels."""
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    attack = FastGradientMethod(clf, norm=np.inf, eps=1.0, eps_step=1 / 255, minimal=True, batch_size=1024)
    xs = x.cpu().numpy()
    start = time.perf_counter()
    adv = attack.generate(xs)
    seconds = time.perf_counter() - start
    pred = predict_labels(model, torch.from_numpy(adv).to(device)).cpu()
    y = predict_labels(model, x).cpu()
    linf = (torch.from_numpy(adv) - x.cpu()).flatten(1).abs().amax(1) * 255
    return seconds, pred != y, linf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet-mnist")
    parser.add_argument("--origins", type=int, default=20)
    parser.add_argument("--grid-points", type=int, default=30)
    parser.add_argument("--bisect-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--float64", action="store_true",
                        help="run the model in float64: batched and naive then agree exactly (float32 convolutions of a "
                             "batch and of one image round differently, which can flip a label at a boundary)")
    parser.add_argument("--skip-art", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = models.get(args.model, device=device)
    dtype = torch.float64 if args.float64 else torch.float32
    model = model.to(dtype)
    x, y = data.load("mnist", "test")
    x = x.to(dtype)
    x_tr, y_tr = data.load("mnist", "train")
    x_tr, y_tr = x_tr[:2000].to(dtype), y_tr[:2000]  # the first correct digit of each class is among them
    pred = predict_labels(model, x[:5000].to(device)).cpu()
    idx = pairs.stratified(y[:5000], max(1, args.origins // 10), mask=pred == y[:5000], seed=0)[:args.origins]
    xo = x[idx].to(device)
    xt = x_tr[pairs.first_correct_per_class(y_tr, predict_labels(model, x_tr.to(device)).cpu())].to(device)
    opts = dict(grid_points=args.grid_points, bisect_steps=args.bisect_steps)

    forwarded = [0]
    hook = model.register_forward_hook(lambda m, i, o: forwarded.__setitem__(0, forwarded[0] + len(i[0])))
    start = time.perf_counter()
    batched = all_attempts(model, xo, xt, layers=LAYERS, **opts)
    t_batched = time.perf_counter() - start
    hook.remove()
    n_attempts = len(batched["success"])

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, forwarded[0], 1024):
            model(torch.rand(min(1024, forwarded[0] - i), 1, 28, 28, device=device, dtype=dtype))
    t_bare = time.perf_counter() - start

    start = time.perf_counter()
    n_images, n_success, n_labels = naive(model, xo, xt, **opts)
    t_naive = time.perf_counter() - start
    # the naive loop runs attempts in kind order per origin, as all_attempts returns them
    same_images = torch.equal(torch.round(n_images.double() * 255).to(torch.uint8).cpu(), batched["images"].cpu())
    same = same_images and torch.equal(n_success.cpu(), batched["success"].cpu()) and torch.equal(n_labels.cpu(), batched["labels"].cpu())
    mismatched = int((torch.round(n_images.double() * 255).to(torch.uint8).cpu() != batched["images"].cpu()).flatten(1).any(1).sum())

    rows = [("batched (all_attempts)", n_attempts, t_batched, "yes" if same else f"no ({mismatched} differ)"),
            ("naive per-origin, per-target loop", n_attempts, t_naive, "reference"),
            (f"bare forwards ({forwarded[0]:,} images)", n_attempts, t_bare, "–")]
    if not args.skip_art:
        try:
            t_art, art_ok, art_linf = art_fgsm(model, xo, device)
            fgs = batched["kind"].cpu() == KINDS.index("fgs")
            ours_linf = batched["linf"].cpu()[fgs][batched["success"].cpu()[fgs]]
            rows.append((f"ART FastGradientMethod(minimal) — FGS only; success {art_ok.double().mean():.0%}, "
                         f"median L∞ {art_linf[art_ok].median():.1f} (ours {ours_linf.median():.1f})",
                         len(xo), t_art, "different method (no 8-bit grid)"))
        except ImportError:
            rows.append(("ART: not installed (pip install adversarial-robustness-toolbox)", 0, float("nan"), "–"))

    cols = ["method", "attempts", "seconds", "attempts/s", "× naive", "× bare forwards", "identical to naive"]
    out = [[name, n, sec, n / sec if n and sec == sec else float("nan"), t_naive / sec, sec / t_bare, same_]
           for name, n, sec, same_ in rows]
    emit("lots_attempts", [table(f"Table 1's attempts on {args.model} ({dtype}): {len(xo)} origins × 47 attempts",
                                 cols, out)],
         device=device, json_path=args.json, context={"model": args.model, "origins": len(xo), "dtype": str(dtype)})


if __name__ == "__main__":
    main()
