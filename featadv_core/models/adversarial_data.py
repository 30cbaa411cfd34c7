"""Training sets of Rozsa et al.'s (2017) Table 1 models: clean ∪ adversarial digits, and a deformed MNIST.

**Adversarial fine-tuning** (§5.1). The paper fine-tunes the Basic LeNet on the union of the
clean training set and the adversarial images its attacks produce on that set (each labelled
with its origin's class): ≈ 52K FGS, 51K FGV, 538K hot/cold and 2.1M LOTS images from the 60K
digits, i.e. every attempt on (nearly) every digit. We keep the whole clean set and attack, on
the Basic LeNet, with the line search of the rest of the chapter
(:func:`featadv_core.attacks.all_attempts`, cached), ``ORIGINS_PER_CLASS`` correctly classified
training digits per class for **every** kind — FGS and FGV one attempt each, hot/cold 9, LOTS 36
(4 layers × 9 targets) — so each adversarial set is a tenth of the paper's and the sets keep the
paper's proportions to one another (LOTS ≈ 40× FGS). The zoo's fine-tuning recipes likewise give
each row about a fifth of the paper's iterations (20K FGS/FGV, 50K HC, 100K LOTS), so no row is
favoured by its budget. (CPU time: the attempts take ≈ 5 ms each here; ``None`` attacks every
correct digit, the paper's sets, ≈ 2.8M attempts.) Each fine-tuning set is the 60K clean digits
∪ the successful images of one kind (or one LOTS layer); the chapter's control model fine-tunes
on the clean digits alone.

**InfiMNIST stand-in.** The paper's InfiMNIST row trains on 2M deformed MNIST digits (Loosli
et al. 2007). We train on the 60K digits plus ``DEFORMED_COPIES`` random deformations of each
(Simard et al. 2003's elastic field, α = 34, σ = 4, with a random affine ±15°, ±2 px, scale
0.9–1.1; :func:`deform`), drawn once from a fixed seed.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import data, pairs
from ..attacks.attempts import KINDS, all_attempts  # the submodule itself: its cache key follows only the
from ..labels import predict_labels                  # attacks these training sets use
from ..repro import cached_chunks

__all__ = ["ORIGINS_PER_CLASS", "LAYERS", "DEFORMED_COPIES", "training_attempts", "union", "deformed_mnist",
           "fgs_union", "fgv_union", "hc_union", "lots_union", "lots_conv1_union", "lots_conv2_union",
           "lots_ip1_union", "lots_ip2_union", "clean_training_set", "deform"]

ORIGINS_PER_CLASS = {"gradient": 600, "hc": 600, "lots": 600}  # a tenth of the paper's; None: every correct digit
LAYERS = ("conv1", "conv2", "ip1", "ip2")
DEFORMED_COPIES = 3       # deformed copies of every training digit; paper (InfiMNIST): ≈ 32
_KINDS = {"gradient": ("fgs", "fgv"), "hc": ("hc",), "lots": ("lots",)}
_CHUNK = 500


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def training_attempts(base: nn.Module, group: str) -> dict[str, torch.Tensor]:
    """Table 1's attempts of one group (``"gradient"``: FGS + FGV, ``"hc"``, ``"lots"``) on training digits.

    Origins: the training digits ``base`` classifies correctly (all, or ``ORIGINS_PER_CLASS``
    per class, stratified, seed 0); LOTS targets: the first correct digit of each class.
    ``origin`` indexes the training split. Cached on disk chunk by chunk (``_CHUNK`` origins;
    the model's weights, the group, the chunk's rows and the code are the key), so a run killed
    after 50 minutes of an hour loses one chunk, not the hour; under ``torchrun`` the chunks are
    shared out among the processes.
    """
    if group not in _KINDS:
        raise ValueError(f"unknown group {group!r}; valid: {', '.join(_KINDS)}")
    x, y = data.load("mnist", "train")
    pred = predict_labels(base, x.to(_device(base))).cpu()
    per_class = ORIGINS_PER_CLASS[group]
    idx = ((pred == y).nonzero().flatten() if per_class is None
           else pairs.stratified(y, per_class, mask=pred == y, seed=0))
    x_t = x[pairs.first_correct_per_class(y, pred)].to(_device(base))

    def compute(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        out = all_attempts(base, x[rows].to(_device(base)), x_t, layers=LAYERS, kinds=_KINDS[group])
        out = {k: v.cpu() for k, v in out.items()}
        out["origin"] = rows[out["origin"]]
        return out

    return cached_chunks(f"lots_training_attempts-{group}", {"group": group, "per_class": per_class,
                                                             "layers": list(LAYERS)},
                         [idx], compute, batch_size=_CHUNK, model=base, code=(all_attempts, training_attempts))


def union(base: nn.Module, kind: str | None, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60K clean training digits ∪ the successful attempts of ``kind`` (LOTS optionally of one layer).

    ``kind`` is one of ``attacks.KINDS`` or ``None`` (the clean digits only: the control).
    Images are [0, 1] floats, labels the origins' true classes.
    """
    x, y = data.load("mnist", "train")
    if kind is None:
        return x, y
    group = {"fgs": "gradient", "fgv": "gradient", "hc": "hc", "lots": "lots"}[kind]
    table = training_attempts(base, group)
    keep = table["success"] & (table["kind"] == KINDS.index(kind))
    if layer is not None:
        keep &= table["layer"] == LAYERS.index(layer)
    x_adv = table["images"][keep].float() / 255
    return torch.cat([x, x_adv]), torch.cat([y, y[table["origin"][keep]]])


def fgs_union(recipe, base):
    """Clean digits ∪ their FGS images (Table 1, row "FGS")."""
    return union(base, "fgs")


def fgv_union(recipe, base):
    """Clean digits ∪ their FGV images (row "FGV")."""
    return union(base, "fgv")


def hc_union(recipe, base):
    """Clean digits ∪ hot/cold images, 9 attempts per attacked digit (row "HC")."""
    return union(base, "hc")


def lots_union(recipe, base):
    """Clean digits ∪ LOTS images at all four layers, 36 attempts per attacked digit (row "LOTS")."""
    return union(base, "lots")


def lots_conv1_union(recipe, base):
    """Clean digits ∪ LOTS images at conv1 (row "LOTS CONV1")."""
    return union(base, "lots", "conv1")


def lots_conv2_union(recipe, base):
    """Clean digits ∪ LOTS images at conv2 (row "LOTS CONV2")."""
    return union(base, "lots", "conv2")


def lots_ip1_union(recipe, base):
    """Clean digits ∪ LOTS images at ip1 (row "LOTS IP1")."""
    return union(base, "lots", "ip1")


def lots_ip2_union(recipe, base):
    """Clean digits ∪ LOTS images at ip2 (row "LOTS IP2")."""
    return union(base, "lots", "ip2")


def clean_training_set(recipe, base):
    """The clean training digits alone: the control for what more training does by itself."""
    return union(base, None)


def deform(x: torch.Tensor, generator: torch.Generator, *, alpha: float = 34.0, sigma: float = 4.0,
           degrees: float = 15.0, shift: float = 2.0, scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Random elastic + affine deformations of a batch (one per image), in one ``grid_sample``.

    Simard et al.'s (2003) elastic field: uniform [−1, 1] displacements smoothed by a Gaussian of
    ``sigma`` pixels and scaled by ``alpha`` pixels (torchvision's ``gaussian_blur``), added to a
    random rotation (±``degrees``), scaling and translation (±``shift`` pixels)
    (``affine_grid``). Zero padding; the result is clamped to [0, 1]. Drawn on ``generator``'s
    device, computed on ``x``'s.
    """
    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import gaussian_blur

    n, _, h, w = x.shape

    def u(*size):
        return torch.rand(*size, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)

    wh = torch.tensor([w, h], dtype=x.dtype, device=x.device)
    angle = (u(n) * 2 - 1) * degrees * torch.pi / 180
    s = scale[0] + (scale[1] - scale[0]) * u(n)
    t = (u(n, 2) * 2 - 1) * shift * 2 / wh
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    radius = int(3 * sigma)
    field = gaussian_blur(u(n, 2, h, w) * 2 - 1, [2 * radius + 1] * 2, [sigma, sigma]) * alpha
    field = field * 2 / wh.view(1, 2, 1, 1)  # pixels → normalised coordinates
    return F.grid_sample(x, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros",
                         align_corners=False).clamp(0, 1)


def deformed_mnist(recipe, base) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 60K training digits plus ``DEFORMED_COPIES`` random deformations of each (seed 0)."""
    x, y = data.load("mnist", "train")
    gen = torch.Generator().manual_seed(0)
    copies = [x] + [torch.cat([deform(x[i:i + 4096], gen) for i in range(0, len(x), 4096)])
                    for _ in range(DEFORMED_COPIES)]
    return torch.cat(copies), y.repeat(DEFORMED_COPIES + 1)
