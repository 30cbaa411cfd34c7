"""Benchmark: the feature-space attack's cost per iteration, and adversarial training against ART.

(a) One FA iteration (``featadv_core.attacks.feature_augmentation``: decode, re-encode, classify,
losses, backward, Adam step, projection, best-iterate bookkeeping) on a batch, divided by the
bare network work it needs — one forward and backward of decoder → encoder + classifier on the
same batch — the overhead ratio of issue 11 (target ≤ 1.3). Also PGD's (one forward and
backward of the classifier).

(b) O2's noise statistics (``defenses.noise_statistics``): forwards of a batch of noisy copies to the
penultimate layer, contiguous against channels-last memory format (issue 11 §2; the module uses
channels-last), for each CIFAR-10 natural model of the zoo.

(c) One epoch of Madry PGD-7 adversarial training (ε 8/255, α 2/255) of the same ResNet-20 on
the same images: ours (``train_classifier`` with ``adversarial_training.pgd7_loss``, bf16 autocast
and channels-last as the zoo's defence recipes train) against the
Adversarial Robustness Toolbox's ``AdversarialTrainerMadryPGD`` (its own PGD and loop, NumPy
batches), then both models' PGD-20 accuracy on held-out test images (target: ≥ 3× ART's speed at
equal robustness). ART is not a requirement of the project: ``pip install
adversarial-robustness-toolbox`` where you run this, or ``--skip-art``.

    FEATADV_DATA_DIR=/work/shared/data python benchmarks/fsa_speed.py
"""
from __future__ import annotations

import argparse
import time

import torch

from featadv_core import attacks, data, features, models
from featadv_core.devices import resolve_device
from featadv_core.models import adversarial_training, architectures
from featadv_core.models.train import TrainConfig, accuracy, train_classifier
from report import emit, table


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def fsa_overhead(model, ae, x, y, steps: int) -> list[list]:
    """Seconds per FA / PGD iteration and per bare forward+backward of the same graph."""
    with torch.no_grad():
        base = ae.encoder(x)

    def bare_fa():
        t = base.clone().requires_grad_(True)
        images = ae.decode(t)
        loss = (ae.encoder(images) - t).pow(2).sum() + model(images).sum()
        torch.autograd.grad(loss, t)  # the input's gradient only, as the attack needs (no weight gradients)

    def bare_pgd():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xi).sum(), xi)

    fa = _timed(lambda: attacks.feature_augmentation(model, x, y, decoder=ae, steps=steps, progress=False), 1) / (steps + 1)
    pgd = _timed(lambda: attacks.pgd(model, x, y, eps=8 / 255, steps=steps, step_size=2 / 255), 1) / (steps + 1)
    rows = []
    for name, per_it, bare in [("feature augmentation", fa, _timed(bare_fa, 5)), ("PGD (L∞)", pgd, _timed(bare_pgd, 5))]:
        rows.append([name, len(x), steps, per_it * 1e3, bare * 1e3, per_it / bare])
    return rows


def o2_memory_format(model_ids: list[str], batch: int, device) -> list[list]:
    """Images/s of O2's penultimate-layer forwards, contiguous vs channels-last input, and the largest difference."""
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for mid in model_ids:
        net = models.get(mid, device=device)
        layer = {"caffenet-cifar10": "fc7", "allconv-cifar10": "pool4"}[mid]
        with torch.inference_mode():
            out = {}
            times = {}
            for name, fmt in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
                xi = x.contiguous(memory_format=fmt)
                times[name] = _timed(lambda xi=xi: out.__setitem__(name, features.forward_to(net, xi, layer)), 3)
        diff = (out["contiguous"] - out["channels-last"]).abs().max().item()
        rows.append([mid, layer, batch, batch / times["contiguous"], batch / times["channels-last"],
                     times["contiguous"] / times["channels-last"], diff])
    return rows


def ours_epoch(x, y, seed: int, fast: bool = True):
    """``fast``: bf16 autocast + channels-last, as the zoo's defence recipes train; else float32 NCHW (ART's numerics)."""
    torch.manual_seed(seed)
    net = architectures.resnet20()
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=128, seed=seed, bf16=fast, channels_last=fast)
    start = time.perf_counter()
    train_classifier(net, x, y, cfg, loss_fn=adversarial_training.pgd7_loss, desc="ours: PGD-7 epoch")
    return net.eval(), time.perf_counter() - start


def art_epoch(x, y, seed: int):
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(seed)
    net = architectures.resnet20()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    clf = PyTorchClassifier(net, loss=torch.nn.CrossEntropyLoss(), optimizer=opt, input_shape=(3, 32, 32),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    trainer = AdversarialTrainerMadryPGD(clf, nb_epochs=1, batch_size=128, eps=8 / 255, eps_step=2 / 255, max_iter=7)
    start = time.perf_counter()
    trainer.fit(x.numpy(), y.numpy())
    return net.eval(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="madry-resnet20-cifar10")
    parser.add_argument("--decoder", default="decoder-allconv-cifar10")
    parser.add_argument("--images", type=int, default=64, help="attack batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--o2-batch", type=int, default=1024, help="noisy copies per O2 forward")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--skip-art", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, ae = models.get(args.model, device=device), models.get(args.decoder, device=device)
    x, y = data.load("cifar10", "test", n=args.images, seed=0)
    overhead = table(f"FSA and PGD: time per iteration against the bare network work ({args.model}, batch {args.images})",
                     ["attack", "batch", "steps", "ms / iteration", "bare forward+backward (ms)", "overhead ratio"],
                     fsa_overhead(model, ae, x.to(device), y.to(device), args.steps),
                     notes="bare work: FA = decoder → encoder + classifier forward and backward; PGD = classifier. "
                           "Target ≤ 1.3.")
    tables = [overhead, table("O2 noise statistics: penultimate-layer forwards by memory format",
                              ["model", "layer", "batch", "contiguous (images/s)", "channels-last (images/s)",
                               "channels-last × faster", "max |difference|"],
                              o2_memory_format(["caffenet-cifar10", "allconv-cifar10"], args.o2_batch, device),
                              notes="inference mode; defenses.noise_statistics feeds channels-last batches.")]
    xt, yt = data.load("cifar10", "train", n=args.train_images, seed=1)
    xv, yv = data.load("cifar10", "test", n=args.test_images, seed=2)
    rows = []
    runs = [("featadv_core, bf16 + channels-last (the zoo's recipe)", ours_epoch),
            ("featadv_core, float32 NCHW", lambda *a: ours_epoch(*a, fast=False))]
    if not args.skip_art:
        runs.append(("ART AdversarialTrainerMadryPGD", art_epoch))
    reference = None
    for name, fn in runs:
        try:
            net, seconds = fn(xt, yt, 0)
        except ImportError as err:
            rows.append([name, f"not installed ({err.name})", None, None, None, None])
            continue
        rob = adversarial_training.robust_accuracy(net, xv, yv)
        row = [name, seconds, args.train_images / seconds, accuracy(net, xv, yv), rob, None]
        if reference is None:
            reference = seconds
        else:
            row[-1] = seconds / reference
        rows.append(row)
    tables.append(table(f"Madry PGD-7 adversarial training, one epoch of {args.train_images} CIFAR-10 images, ResNet-20",
                        ["trainer", "seconds", "images/s", "clean accuracy", "PGD-20 accuracy", "seconds ÷ first row's (ours × faster)"], rows,
                        notes=f"accuracies on {args.test_images} test images; PGD-20 = 20 steps of 2/255 at 8/255."))
    emit("fsa_speed", tables, device=device, json_path=args.json,
         context={"model": args.model, "decoder": args.decoder, "steps": args.steps})


if __name__ == "__main__":
    main()
