"""An independent robustness evaluation of a defended model: AutoAttack's core, APGD-CE then APGD-T.

Our own PGD-20 (:func:`.adversarial_training.robust_accuracy`) is the attack chapter 3's tables
use; a defence judged only by the attack its training used can look robust because its
gradients mislead that attack (gradient masking). Croce & Hein (2020) showed that two
parameter-free attacks catch most such cases: **APGD-CE** (auto-PGD on the cross-entropy, step
size halved when progress stalls, momentum 0.75) and, on the images it does not break,
**APGD-T** (the targeted difference-of-logits-ratio loss against each of the 9 most likely wrong
classes in turn), 100 iterations each. :func:`apgd_accuracy` runs both from the maintained port
in ``torchattacks`` (installed without its stale ``requests~=2.25`` pin: see
``requirements-nodeps.txt``), never reimplemented here, and checks every image it returns
(inside the ε-ball and [0, 1]) before predicting it with our own code.

``torchattacks`` reseeds torch's *global* random stream at every call (``APGD.perturb`` calls
``torch.random.manual_seed(seed)``), which would silently make a caller's later draws depend on
having evaluated a model; the calls here run inside :func:`torch.random.fork_rng`, so the
caller's stream is untouched (``tests/test_robust_evaluation.py`` shows both).

A PGD-20 accuracy more than :data:`MASKING_GAP` above the APGD-CE+T accuracy on the same images
is reported as gradient masking (the issue's criterion: PGD is then too weak on this model).
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ..labels import predict_labels

__all__ = ["apgd_accuracy", "masking", "MASKING_GAP"]

MASKING_GAP = 0.03  # PGD-20 this far above APGD-CE+T (same images) flags gradient masking


def _attack(attack, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``attack(x, y)`` on the global stream's fork (torchattacks reseeds it), checked to be a valid L∞ adversary."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        adv = attack(x, y)
    slack = 1e-6
    if (adv - x).abs().amax() > eps + slack or adv.amin() < -slack or adv.amax() > 1 + slack:
        raise RuntimeError(f"{type(attack).__name__} returned images outside the ε = {eps:.5f} ball or [0, 1]")
    return adv


def apgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, steps: int = 100,
                  target_classes: int = 9, batch_size: int = 250, seed: int = 0,
                  progress: bool = True) -> dict:
    """Accuracy of ``model`` (eval mode, inputs in [0, 1]) on ``(x, y)``: clean, under APGD-CE, and under
    APGD-CE then APGD-T (``target_classes`` wrong classes, the most likely first), L∞ ``eps``.

    An image counts as robust only if every attack leaves its prediction correct; each attack
    runs on the images still robust (AutoAttack's order), in batches of ``batch_size``.
    Returns ``{"clean", "apgd_ce", "apgd_ce_t", "n", "eps", "steps", "target_classes"}``.
    """
    try:
        import torchattacks  # the evaluation's own dependency (requirements-nodeps.txt)
    except ImportError as err:
        raise ImportError("the APGD evaluation needs torchattacks: pip install --no-deps torchattacks==3.5.1 "
                          "(make setup and the notebooks' set-up cell do; --no-deps keeps its stale requests pin "
                          "out)") from err

    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need a non-empty N×C×H×W batch and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 1 <= target_classes:
        raise ValueError(f"target_classes must be ≥ 1, got {target_classes}")
    if model.training:
        raise ValueError("evaluate a model in eval mode (call .eval()): batch-norm statistics must not move")
    device = next(model.parameters()).device
    x, y = x.cpu(), y.cpu()
    robust = predict_labels(model, x, batch_size=batch_size, device=device) == y
    with torch.no_grad():
        n_classes = int(model(x[:1].to(device)).shape[1])
    if target_classes > n_classes - 1:
        raise ValueError(f"target_classes must be ≤ {n_classes - 1} (the wrong classes), got {target_classes}")
    attacks = {
        "apgd_ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce"),
        # APGDT tries n_classes − 1 targets (its constructor's rule), the most likely wrong class first
        "apgd_ce_t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                                        n_classes=target_classes + 1),
    }
    out = {"clean": robust.float().mean().item()}
    for name, attack in attacks.items():
        idx = robust.nonzero().flatten()
        for start in tqdm(range(0, len(idx), batch_size), desc=name, unit="batch", leave=False, disable=not progress):
            part = idx[start:start + batch_size]
            xb, yb = x[part].to(device), y[part].to(device)
            adv = _attack(attack, xb, yb, eps)
            robust[part] &= (predict_labels(model, adv, batch_size=batch_size) == yb).cpu()
        out[name] = robust.float().mean().item()
    return dict(out, n=len(x), eps=eps, steps=steps, target_classes=target_classes)


def masking(pgd_accuracy: float, apgd_accuracy: float) -> bool:
    """Whether PGD's accuracy exceeds APGD-CE+T's on the same images by more than :data:`MASKING_GAP`."""
    return pgd_accuracy - apgd_accuracy > MASKING_GAP
