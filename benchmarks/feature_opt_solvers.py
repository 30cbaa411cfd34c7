"""Benchmark: solvers for feature adversaries (Sabour et al. 2016, Eq. 1–2) on the same pairs.

Runs ``feature_opt`` with ``solver="scipy"`` (the paper's per-pair L-BFGS-B), ``"lbfgsb"``
(our batched L-BFGS-B) and ``"pgd"`` (projected Adam), plus — as the outside peer —
the Adversarial Robustness Toolbox's ``FeatureAdversariesPyTorch`` (its default sign-gradient
PGD, step ``2.5·eps/steps``, same layer, delta and iteration budget), on N source/guide pairs of
the CIFAR-10 test split with different labels, and prints a markdown table.

Speeds are pairs per second of wall-clock time and of process CPU time (the latter is what an
idle machine would give when the others' jobs share its cores; with ``--threads 1`` it is the
single-core figure); speed-ups are ratios against ``"scipy"`` in the same run. The distance ratio is ``d(α, g) / d(s, g)`` at the attacked layer (Fig. 3a), the
objective ``||φ(α) − φ(g)||²`` (Eq. 1), and the last column checks the L∞ bound.

    FEATADV_DATA_DIR=/work/shared/data python benchmarks/feature_opt_solvers.py \
        --model caffenet-cifar10 --layer fc7 --eps 10/255 --pairs 100 --steps 500

ART is not a dependency of the core: ``pip install adversarial-robustness-toolbox`` to include
it, or pass ``--skip-art``.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from featadv_core import data, features, models
from featadv_core.attacks import feature_opt
from featadv_core.devices import resolve_device
from report import emit, table


def parse_eps(text: str) -> float:
    """``"10/255"`` or ``"0.04"`` → float."""
    return float(Fraction(text))


def draw_pairs(labels: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (source, guide) index pairs with different labels, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    src = rng.choice(len(y), size=n, replace=len(y) < n)
    guide = np.empty(n, dtype=np.int64)
    for i, s in enumerate(src):
        candidates = np.flatnonzero(y != y[s])
        guide[i] = rng.choice(candidates)
    return src, guide


def art_attack(model: nn.Module, x_src: torch.Tensor, x_guide: torch.Tensor, *, layer: str, eps: float,
               steps: int, device: torch.device) -> torch.Tensor:
    """ART's FeatureAdversariesPyTorch (default PGD) on a flattened copy of a zoo model."""
    try:
        from art.attacks.evasion import FeatureAdversariesPyTorch
        from art.estimators.classification import PyTorchClassifier
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "the ART peer needs the Adversarial Robustness Toolbox: "
            "`pip install adversarial-robustness-toolbox` (or pass --skip-art)"
        ) from err
    # ART addresses layers by the names of the model's top-level children and registers hooks
    # it never removes: give it a Sequential of (copies of) our modules.
    path = model.layer_map[layer]
    if not path.startswith("net."):
        raise SystemExit(f"cannot map layer {layer!r} ({path}) onto ART's top-level layer names")
    seq = nn.Sequential(OrderedDict([("normalize", model.normalize), *model.net.named_children()]))
    seq = copy.deepcopy(seq).eval()
    n_classes = seq(x_src[:1].to(device)).shape[1]
    classifier = PyTorchClassifier(model=seq, loss=nn.CrossEntropyLoss(), input_shape=tuple(x_src.shape[1:]),
                                   nb_classes=n_classes, clip_values=(0.0, 1.0),
                                   device_type="gpu" if device.type == "cuda" else "cpu")
    attack = FeatureAdversariesPyTorch(classifier, delta=float(eps), layer=path[len("net."):],
                                       max_iter=steps, batch_size=len(x_src), step_size=2.5 * eps / steps,
                                       verbose=False)
    out = attack.generate(x=x_src.cpu().numpy(), y=x_guide.cpu().numpy())
    return torch.from_numpy(out).to(x_src.device)


def eval_cost(model: nn.Module, layer: str, x: torch.Tensor, device: torch.device,
              repeats: int = 3) -> tuple[float, float]:
    """Milliseconds per image of one objective + gradient evaluation at batch 1 and at batch ``len(x)``.

    Their ratio bounds what batching alone can gain over the per-pair reference when both use
    the same number of evaluations (the rest must come from needing fewer of them).
    """
    target = features.forward_to(model, x, layer).detach()

    def once(xb: torch.Tensor, tb: torch.Tensor) -> None:
        xb = xb.detach().requires_grad_(True)
        loss = (features.forward_to(model, xb, layer) - tb).square().sum()
        torch.autograd.grad(loss, xb)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def per_image(batch: int) -> float:
        once(x[:batch], target[:batch])  # warm-up
        n = max(repeats, len(x) // batch) if batch == 1 else repeats
        start = time.perf_counter()
        for i in range(n):
            j = (i * batch) % len(x)
            once(x[j:j + batch], target[j:j + batch])
        return (time.perf_counter() - start) / (n * batch) * 1e3

    return per_image(1), per_image(len(x))


@torch.no_grad()
def evaluate(model, layer, x_src, x_guide, x_adv, eps) -> dict[str, np.ndarray]:
    phi = lambda x: features.forward_to(model, x, layer).flatten(1).double()  # noqa: E731
    fs, fg, fa = phi(x_src), phi(x_guide), phi(x_adv)
    d_sg = (fs - fg).norm(dim=1)
    d_ag = (fa - fg).norm(dim=1)
    linf = (x_adv.double() - x_src.double()).flatten(1).abs().amax(1)
    return {"ratio": (d_ag / d_sg).cpu().numpy(), "objective": (d_ag ** 2).cpu().numpy(),
            "linf_over_eps": (linf / eps).cpu().numpy()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="caffenet-cifar10")
    parser.add_argument("--layer", default="fc7")
    parser.add_argument("--eps", default="10/255", help="L∞ bound in pixel units, e.g. 10/255")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--methods", default="scipy,lbfgsb,pgd,art",
                        help="comma-separated subset of scipy,lbfgsb,pgd,art")
    parser.add_argument("--skip-art", action="store_true", help="leave out the ART peer")
    parser.add_argument("--lbfgsb-budgets", default="",
                        help="comma-separated extra iteration budgets for \"lbfgsb\" (e.g. 300,200): "
                             "how few iterations reach the scipy objective, and how fast that is")
    parser.add_argument("--checkpoint", default=None,
                        help="load the zoo model's weights from this checkpoint file instead of "
                             "models.get (e.g. an older cached recipe while the current one trains)")
    parser.add_argument("--progress", action="store_true", help="show the solvers' progress bars")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    methods = [(m, args.steps) for m in args.methods.split(",") if m and not (m == "art" and args.skip_art)]
    methods += [("lbfgsb", int(b)) for b in args.lbfgsb_budgets.split(",") if b]

    if args.checkpoint:
        from featadv_core.models import zoo

        model = zoo._build_own(zoo.ZOO[args.model])
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"])
        model = model.to(device).eval()
    else:
        model = models.get(args.model, device=device)
    dataset = {"caffenet-cifar10": "cifar10", "allconv-cifar10": "cifar10", "lenet-mnist": "mnist",
               "lenet-fashion": "fashion_mnist"}[args.model]
    x, y = data.load(dataset, "test")
    src, guide = draw_pairs(y, args.pairs, args.seed)
    x_src, x_guide = x[src].to(device), x[guide].to(device)

    print(f"{args.model} layer {args.layer}, eps {args.eps}, {args.pairs} pairs, {args.steps} steps, "
          f"device {device}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    one, full = eval_cost(model, args.layer, x_src, device)
    print(f"  one objective+gradient evaluation: {one:.2f} ms per image at batch 1, {full:.2f} ms per image "
          f"at batch {len(x_src)}: batching alone can buy at most {one / full:.1f}× at equal evaluations",
          flush=True)
    rows = []
    for method, steps in methods:
        torch.manual_seed(args.seed)
        start, cpu_start = time.perf_counter(), time.process_time()
        if method == "art":
            x_adv = art_attack(model, x_src, x_guide, layer=args.layer, eps=eps, steps=steps, device=device)
        else:
            x_adv = feature_opt(model, x_src, x_guide, layer=args.layer, eps=eps, steps=steps,
                                solver=method, progress=args.progress)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        metrics = evaluate(model, args.layer, x_src, x_guide, x_adv, eps)
        label = method if steps == args.steps else f"{method}@{steps}"
        rows.append((label, args.pairs / seconds, args.pairs / cpu, metrics))
        print(f"  {label}: {seconds:.1f} s wall, {cpu:.1f} s CPU, median ratio {np.median(metrics['ratio']):.4f}, "
              f"median objective {np.median(metrics['objective']):.4g}", flush=True)

    base = next((r for r in rows if r[0] == "scipy"), None)
    names = {"scipy": "feature_opt, solver=\"scipy\" (paper: per-pair L-BFGS-B)",
             "lbfgsb": "feature_opt, solver=\"lbfgsb\" (batched L-BFGS-B)",
             "pgd": "feature_opt, solver=\"pgd\" (projected Adam)",
             "art": "ART FeatureAdversariesPyTorch (PGD)"}
    cols = ["method", "pairs/s (wall)", "vs scipy", "pairs/s (CPU time)", "vs scipy (CPU)", "median d(α,g)/d(s,g)",
            "median objective", "median per-pair objective / scipy's", "max ‖x−x_s‖∞/ε"]
    out = []
    for label, rate, cpu_rate, mt in rows:
        method, _, budget = label.partition("@")
        out.append([names[method] + (f", {budget} iterations" if budget else ""), rate,
                    rate / base[1] if base else None, cpu_rate, cpu_rate / base[2] if base else None,
                    float(np.median(mt["ratio"])), float(np.median(mt["objective"])),
                    float(np.median(mt["objective"] / base[3]["objective"])) if base else None,
                    float(mt["linf_over_eps"].max())])
    emit("feature_opt_solvers", [table(f"feature adversaries on {args.model} {args.layer}: eps {args.eps}, "
                                       f"{args.pairs} pairs, {args.steps} steps", cols, out,
                                       notes=f"one objective+gradient evaluation: {one:.2f} ms per image at batch 1, "
                                             f"{full:.2f} ms at batch {len(x_src)} (batching alone buys at most "
                                             f"{one / full:.1f}× at equal evaluations)")],
         device=device, json_path=args.json,
         context={"model": args.model, "layer": args.layer, "eps": args.eps, "pairs": args.pairs, "steps": args.steps,
                  "eval_ms_batch1": one, "eval_ms_batched": full})


if __name__ == "__main__":
    main()
