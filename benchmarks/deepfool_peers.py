"""Benchmark: our batched DeepFool against torchattacks, foolbox 3 and ART on the same batch; Algorithm 1 per class.

Same model, same images, same settings for everyone: overshoot 0.02, an iteration cap of 50
(torchattacks' and foolbox's default), every class a candidate (10), images clipped to
[0, 1] (all three peers clip; ours with ``box=(0, 1)``). Each peer's known deviations (see
the chapter-4 spec, §8): torchattacks applies ``(1 + overshoot)`` at every step and loops over
images in Python; foolbox linearises at the overshot point, adds 1e-4 to the distances and
runs a forward and backward pass per candidate; ART's overshoot defaults to 1e-6 (we pass
0.02) and it scales each step by the clip range. For every method: images/s, success (label ≠
clean prediction), mean ‖r‖₂ over successes, and agreement with ours (the share of images
with the same adversarial label, the median ratio of perturbation norms).

Also: the time of one DeepFool iteration on the whole batch divided by the bare network work
it needs (one forward with gradients and the nine candidates' backward passes) — the
overhead ratio of issue 11 — and the time of Algorithm 1 (full spectrum and top-k) per class.

Peers are not requirements of the project: install them where you run this,
``pip install torchattacks foolbox adversarial-robustness-toolbox`` (torchattacks pins an old
``requests``; a separate environment avoids the conflict), or skip them with ``--skip``.

    FEATADV_DATA_DIR=/work/shared/data python benchmarks/deepfool_peers.py --images 500
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from featadv_core import analysis, attacks, data, models
from featadv_core.devices import resolve_device
from report import best_of, emit, table

OVERSHOOT, STEPS, CANDIDATES = 0.02, 50, 10


def _norms(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (adv.detach().cpu().double() - x.cpu().double()).flatten(1).norm(dim=1)


@torch.no_grad()
def _labels(model, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]).cpu()


def ours(model, x, y):
    return attacks.deepfool(model, x, overshoot=OVERSHOOT, max_iter=STEPS, candidates=CANDIDATES, box=(0.0, 1.0))


def torchattacks_deepfool(model, x, y):
    import torchattacks

    return torchattacks.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)(x, y.to(x.device))


def foolbox_deepfool(model, x, y):
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=CANDIDATES, overshoot=OVERSHOOT)
    _, clipped, _ = attack(fmodel, x, y.to(x.device), epsilons=None)
    return clipped


def art_deepfool(model, x, y):
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="gpu" if x.device.type == "cuda" else "cpu")
    attack = DeepFool(clf, max_iter=STEPS, epsilon=OVERSHOOT, nb_grads=CANDIDATES, batch_size=len(x), verbose=False)
    return torch.from_numpy(attack.generate(x.cpu().numpy())).to(x.device)


PEERS = {"torchattacks": torchattacks_deepfool, "foolbox": foolbox_deepfool, "art": art_deepfool}


def _bare_step(model, n: int, like: torch.Tensor) -> None:
    """The network work one DeepFool iteration needs on ``n`` images: a forward with gradients and
    the candidates' backward passes."""
    xg = like[:n].detach().clone().requires_grad_(True)
    out = model(xg)
    l = out.argmax(1)
    for j in range(CANDIDATES - 1):
        cot = (F.one_hot((l + 1 + j) % 10, 10) - F.one_hot(l, 10)).to(out.dtype)
        torch.autograd.grad(out, xg, grad_outputs=cot, retain_graph=j < CANDIDATES - 2)


def iteration_overhead(model, x, repeats: int = 3) -> dict:
    """A whole DeepFool run against the bare network work its iterations needed.

    A forward hook records how many images each gradient-carrying forward pass of the run held
    (the images still active at that iteration); the bare work is one :func:`_bare_step` per
    recorded pass, of that size. The ratio charges everything else to the attack: the clean and
    check forwards, candidate selection, distances, steps and masks. Also reported: one
    iteration on the whole batch (``max_iter=1``, which pays the clean forward on its own).
    """
    sizes: list[int] = []

    def hook(_module, inputs, _output):
        if torch.is_grad_enabled() and inputs[0].requires_grad:
            sizes.append(len(inputs[0]))

    handle = model.register_forward_hook(hook)
    attacks.deepfool(model, x, overshoot=OVERSHOOT, max_iter=STEPS, candidates=CANDIDATES, box=(0.0, 1.0))
    handle.remove()

    full = best_of(lambda: attacks.deepfool(model, x, overshoot=OVERSHOOT, max_iter=STEPS, candidates=CANDIDATES,
                                            box=(0.0, 1.0)), repeats)
    bare = best_of(lambda: [_bare_step(model, n, x) for n in sizes], repeats)
    one = best_of(lambda: attacks.deepfool(model, x, overshoot=OVERSHOOT, max_iter=1, candidates=CANDIDATES,
                                           box=(0.0, 1.0)), repeats)
    one_bare = best_of(lambda: _bare_step(model, len(x), x), repeats)
    return {"iterations": len(sizes), "active images per iteration": sizes, "run": full, "run bare": bare,
            "one": one, "one bare": one_bare}


def algorithm1_per_class(model_id: str, device, n_samples: int, k: int) -> list[dict]:
    model = models.get(model_id, device=device)
    x_train, _ = data.load(models.ZOO[model_id].dataset, "train")
    h = analysis.fd_step(x_train)
    rows = []
    for method in ("full", "topk") if x_train[0].numel() <= 1024 else ("topk",):
        start = time.perf_counter()
        curv = analysis.principal_curvatures(model, x_train.to(device), 0, h=h, n_samples=n_samples, method=method, k=k,
                                             progress=False)
        rows.append({"model": model_id, "method": method, "boundary points": curv.n_points,
                     "seconds per class": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="allconv-cifar10")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--peer-images", type=int, default=100,
                        help="images for the per-image peers (torchattacks); their rate is per image anyway")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(PEERS), help="peers to leave out")
    parser.add_argument("--alg1-samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = models.get(args.model, device=device)
    x, _ = data.load(models.ZOO[args.model].dataset, "test", n=args.images, seed=0)
    x = x.to(device)
    clean = _labels(model, x)

    rows, reference = [], None
    for name, fn in [("featadv_core.attacks.deepfool", ours)] + [(n, f) for n, f in PEERS.items() if n not in args.skip]:
        xs = x if name != "torchattacks" else x[:args.peer_images]
        try:
            start = time.perf_counter()
            adv = fn(model, xs, clean[:len(xs)])
            seconds = time.perf_counter() - start
        except ImportError as err:
            rows.append({"method": name, "error": f"not installed ({err.name})"})
            continue
        lab = _labels(model, adv)
        ok = lab != clean[:len(xs)]
        norm = _norms(adv, xs)
        row = {"method": name, "images": len(xs), "seconds": seconds, "images/s": len(xs) / seconds,
               "success": ok.double().mean().item(), "mean ‖r‖₂": norm[ok].mean().item()}
        if reference is None:
            reference = {"labels": lab, "norm": norm, "rate": row["images/s"]}
        else:
            n = len(xs)
            row["same label as ours"] = (lab == reference["labels"][:n]).double().mean().item()
            both = ok & (reference["norm"][:n] > 0)
            row["median ‖r‖ / ours"] = (norm[both] / reference["norm"][:n][both]).median().item()
            row["ours × faster"] = reference["rate"] / row["images/s"]
        rows.append(row)

    ov = iteration_overhead(model, x)
    alg1 = algorithm1_per_class("lenet-mnist", device, args.alg1_samples, 48) + \
        algorithm1_per_class(args.model, device, max(2, args.alg1_samples // 2), 48)

    cols = ["method", "images", "images/s", "success", "mean ‖r‖₂", "same label as ours", "median ‖r‖ / ours",
            "ours × faster"]
    peers = table(f"DeepFool on {args.model}: {args.images} test images, overshoot {OVERSHOOT}, ≤ {STEPS} iterations, "
                  f"{CANDIDATES} candidates, box [0, 1]",
                  cols, [[r["method"], *([r["error"]] + ["–"] * (len(cols) - 2) if "error" in r else
                                         [r.get(c) for c in cols[1:]])] for r in rows],
                  notes=f"torchattacks runs on the first {args.peer_images} images (a per-image loop).")
    overhead = table("DeepFool: time against the bare network work (a forward with gradients and "
                     f"{CANDIDATES - 1} backward passes per iteration, on the images still active)",
                     ["measured", "iterations", "seconds", "bare network work (s)", "overhead ratio"],
                     [["whole run", ov["iterations"], ov["run"], ov["run bare"], ov["run"] / ov["run bare"]],
                      ["one iteration (max_iter=1, incl. the clean forward)", 1, ov["one"], ov["one bare"],
                       ov["one"] / ov["one bare"]]],
                     notes="active images per iteration: " + ", ".join(map(str, ov["active images per iteration"])))
    per_class = table("Algorithm 1: seconds per class", ["model", "method", "boundary points", "seconds per class"],
                      [[r["model"], r["method"], r["boundary points"], r["seconds per class"]] for r in alg1])
    emit("deepfool_peers", [peers, overhead, per_class], device=device, json_path=args.json,
         context={"model": args.model, "images": args.images, "overshoot": OVERSHOOT, "steps": STEPS,
                  "candidates": CANDIDATES})


if __name__ == "__main__":
    main()
