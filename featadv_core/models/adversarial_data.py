"""Training sets of Rozsa et al.'s (2017) Table 1 models: clean ∪ adversarial digits, and a deformed MNIST.

**Adversarial fine-tuning** (§5.1). The paper fine-tunes the Basic LeNet on the union of the
clean training set and the adversarial images its attacks produce on that set (each labelled
with its origin's class): ≈ 52K FGS, 51K FGV, 538K hot/cold and 2.1M LOTS images from the 60K
digits. We attack ``N_ORIGINS`` correctly classified training digits (stratified by class) with
all of Table 1's attempts at once (:func:`featadv_core.attacks.all_attempts`, cached) and train
on the union of **those origins' clean images** and their successful adversarial images of one
kind (or one LOTS layer). Keeping the clean part to the same origins keeps the paper's
proportions (1 clean : 0.87 FGS : 9 hot/cold : 36 LOTS per digit) at a CPU scale; the
chapter's control model fine-tunes on the clean part alone.

**InfiMNIST stand-in.** The paper's InfiMNIST row trains on 2M elastically and affinely
deformed MNIST digits (Loosli et al. 2007). We train on the 60K digits plus ``DEFORMED_COPIES``
random deformations of each (Simard et al. 2003's elastic field, α = 34, σ = 4, with a random
affine ±15°, ±2 px, scale 0.9–1.1; :func:`deform`), drawn once from a fixed seed.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import attacks, data, pairs
from ..repro import cached

__all__ = ["N_ORIGINS", "LAYERS", "DEFORMED_COPIES", "training_attempts", "union", "deformed_mnist",
           "fgs_union", "fgv_union", "hc_union", "lots_union", "lots_conv1_union", "lots_conv2_union",
           "lots_ip1_union", "lots_ip2_union", "clean_origins", "deform"]

N_ORIGINS = 2000          # training digits attacked (200 per class); paper: all 60,000
LAYERS = ("conv1", "conv2", "ip1", "ip2")
DEFORMED_COPIES = 4       # deformed copies of every training digit; paper (InfiMNIST): ≈ 32
_CHUNK = 100


def _origins(base: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attacked training digits (correctly classified by ``base``), their labels and LOTS's 10 targets."""
    x, y = data.load("mnist", "train")
    pred = attacks.predict_labels(base, x.to(next(base.parameters()).device)).cpu()
    idx = pairs.stratified(y, N_ORIGINS // 10, mask=pred == y, seed=0)
    targets = pairs.first_correct_per_class(y, pred)
    return x[idx], y[idx], x[targets]


def training_attempts(base: nn.Module) -> dict[str, torch.Tensor]:
    """All of Table 1's attempts on the ``N_ORIGINS`` training digits, on ``base`` (cached on disk)."""
    def compute() -> dict[str, torch.Tensor]:
        from tqdm.auto import tqdm

        x, _, x_t = _origins(base)
        device = next(base.parameters()).device
        parts = []
        for i in tqdm(range(0, len(x), _CHUNK), desc="adversarial training data", leave=False):
            out = attacks.all_attempts(base, x[i:i + _CHUNK].to(device), x_t.to(device), layers=LAYERS)
            out = {k: v.cpu() for k, v in out.items()}
            out["origin"] += i
            parts.append(out)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    return cached("lots_training_attempts", {"n_origins": N_ORIGINS, "layers": list(LAYERS)}, compute,
                  model=base, code=(attacks.all_attempts, training_attempts))


def union(base: nn.Module, kind: str | None, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean origins ∪ the successful attempts of ``kind`` (one of ``attacks.KINDS``; LOTS optionally one layer).

    ``kind=None``: the clean origins only (the control). Images are [0, 1] floats, labels the
    origins' classes.
    """
    x, y, _ = _origins(base)
    if kind is None:
        return x, y
    table = training_attempts(base)
    keep = table["success"] & (table["kind"] == attacks.KINDS.index(kind))
    if layer is not None:
        keep &= table["layer"] == LAYERS.index(layer)
    x_adv = table["images"][keep].float() / 255
    return torch.cat([x, x_adv]), torch.cat([y, y[table["origin"][keep]]])


def fgs_union(recipe, base):
    """Clean origins ∪ their FGS images (Table 1, row "FGS")."""
    return union(base, "fgs")


def fgv_union(recipe, base):
    """Clean origins ∪ their FGV images (row "FGV")."""
    return union(base, "fgv")


def hc_union(recipe, base):
    """Clean origins ∪ their hot/cold images, 9 per digit (row "HC")."""
    return union(base, "hc")


def lots_union(recipe, base):
    """Clean origins ∪ their LOTS images at all four layers, 36 per digit (row "LOTS")."""
    return union(base, "lots")


def lots_conv1_union(recipe, base):
    """Clean origins ∪ their LOTS images at conv1 (row "LOTS CONV1")."""
    return union(base, "lots", "conv1")


def lots_conv2_union(recipe, base):
    """Clean origins ∪ their LOTS images at conv2 (row "LOTS CONV2")."""
    return union(base, "lots", "conv2")


def lots_ip1_union(recipe, base):
    """Clean origins ∪ their LOTS images at ip1 (row "LOTS IP1")."""
    return union(base, "lots", "ip1")


def lots_ip2_union(recipe, base):
    """Clean origins ∪ their LOTS images at ip2 (row "LOTS IP2")."""
    return union(base, "lots", "ip2")


def clean_origins(recipe, base):
    """The clean origins alone: the control for what fine-tuning on that subset does by itself."""
    return union(base, None)


def deform(x: torch.Tensor, generator: torch.Generator, *, alpha: float = 34.0, sigma: float = 4.0,
           degrees: float = 15.0, shift: float = 2.0, scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Random elastic + affine deformations of a batch (one per image), in one ``grid_sample``.

    Simard et al.'s (2003) elastic field: uniform [−1, 1] displacements smoothed by a Gaussian of
    ``sigma`` pixels and scaled by ``alpha`` pixels (torchvision's ``gaussian_blur``), added to a
    random rotation (±``degrees``), scaling and translation (±``shift`` pixels)
    (``affine_grid``). Zero padding; the result is clamped to [0, 1].
    """
    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import gaussian_blur

    n, _, h, w = x.shape
    u = lambda *size: torch.rand(*size, generator=generator, dtype=x.dtype)  # noqa: E731
    angle = (u(n) * 2 - 1) * degrees * torch.pi / 180
    s = scale[0] + (scale[1] - scale[0]) * u(n)
    t = (u(n, 2) * 2 - 1) * shift * 2 / torch.tensor([w, h], dtype=x.dtype)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    radius = int(3 * sigma)
    field = gaussian_blur(u(n, 2, h, w) * 2 - 1, [2 * radius + 1] * 2, [sigma, sigma]) * alpha
    field = field * 2 / torch.tensor([w, h], dtype=x.dtype).view(1, 2, 1, 1)  # pixels → normalised coordinates
    return F.grid_sample(x, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros",
                         align_corners=False).clamp(0, 1)


def deformed_mnist(recipe, base) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 60K training digits plus ``DEFORMED_COPIES`` random deformations of each (seed 0)."""
    x, y = data.load("mnist", "train")
    gen = torch.Generator().manual_seed(0)
    copies = [x] + [torch.cat([deform(x[i:i + 4096], gen) for i in range(0, len(x), 4096)])
                    for _ in range(DEFORMED_COPIES)]
    return torch.cat(copies), y.repeat(DEFORMED_COPIES + 1)
