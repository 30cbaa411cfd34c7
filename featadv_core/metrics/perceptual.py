"""Perceptual similarity: SSIM and PASS (Rozsa, Rudd & Boult 2016, §3), with maintained libraries.

    PASS(x̃, x) = SSIM(ψ(x̃, x), x)

``ψ(x̃, x)`` is the adversarial image ``x̃`` aligned onto the original ``x`` by the homography
that maximises the enhanced correlation coefficient (ECC; Evangelidis & Psarakis 2008) —
OpenCV's ``findTransformECC`` from the identity, then ``warpPerspective`` with
``WARP_INVERSE_MAP`` — and SSIM is Wang et al.'s (2004) with an 11×11 Gaussian window
(σ = 1.5) on grey levels 0–255 (scikit-image). PASS is not symmetric: the adversarial image is
the one warped.

Two details the papers leave open (chapter 2's PASS page measures both):

* **border**: ``"same"`` (default) averages the full SSIM map, as the LOTS paper's numbers
  require on 28×28 MNIST; ``"valid"`` drops the 5-pixel border the window does not cover
  (scikit-image's scalar, Wang's MATLAB reference), which inflates MNIST PASS a lot;
* **ECC failure** (OpenCV raises when ECC does not converge, meets NaNs, or sees a constant
  image): the pair is flagged and aligned with the next, simpler motion model (affine), or
  scored unaligned when that fails too; callers count the flags.

Colour images are aligned on their grey versions and all channels warped alike; SSIM is the
mean over channels.
"""
from __future__ import annotations

import numpy as np
import torch

from ..images import check_images

__all__ = ["ssim", "pass_score", "ecc_align", "BORDERS"]

BORDERS = ("same", "valid")
_WIN_RADIUS = 5  # the 11×11 window: scikit-image's Gaussian filter truncated at 3.5σ, σ = 1.5


def _grey_levels(x: torch.Tensor, name: str) -> np.ndarray:
    """N×C×H×W [0, 1] images → N×H×W×C float32 grey levels (0–255)."""
    check_images(x, name)
    return (x.detach().to(torch.float64).cpu() * 255).permute(0, 2, 3, 1).numpy().astype(np.float32)


def _ssim_one(a: np.ndarray, b: np.ndarray, border: str) -> float:
    """SSIM of two H×W×C float32 images in grey levels, full-image or valid-region mean."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255.0, channel_axis=2, full=True)
    if border == "valid":
        r = _WIN_RADIUS
        full = full[r:-r, r:-r]
    return float(np.mean(full, dtype=np.float64))


def _check(x_a: torch.Tensor, x_b: torch.Tensor, border: str, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    a, b = _grey_levels(x_a, names[0]), _grey_levels(x_b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if min(a.shape[1:3]) < 2 * _WIN_RADIUS + 1:
        raise ValueError(f"SSIM's 11×11 window needs images of at least 11×11 pixels, got {a.shape[1:3]}")
    return a, b


def ssim(x: torch.Tensor, y: torch.Tensor, *, border: str = "same") -> torch.Tensor:
    """SSIM of each pair ``(x[i], y[i])`` (11×11 Gaussian window, σ 1.5, grey levels), float64, N values."""
    a, b = _check(x, y, border, ("x", "y"))
    return torch.tensor([_ssim_one(a[i], b[i], border) for i in range(len(a))], dtype=torch.float64)


def _grey(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.shape[2] == 1 else np.ascontiguousarray(img @ np.float32([0.299, 0.587, 0.114]))


_MOTIONS = {"homography": ("MOTION_HOMOGRAPHY", 3), "affine": ("MOTION_AFFINE", 2), "euclidean": ("MOTION_EUCLIDEAN", 2),
            "translation": ("MOTION_TRANSLATION", 2)}


def ecc_align(adv: np.ndarray, ref: np.ndarray, *, motions: tuple[str, ...] = ("homography", "affine"),
              iterations: int = 100, eps: float = 1e-5, gauss_filt_size: int = 5) -> tuple[np.ndarray, int]:
    """``(ψ(adv, ref), attempt)``: ``adv`` (H×W×C grey levels) warped onto ``ref`` by ECC.

    ``motions`` are tried in order (each from the identity) until OpenCV's ``findTransformECC``
    converges; ``attempt`` is the index of the one that did (0: the first, the paper's
    homography), or ``len(motions)`` when all failed — then ``adv`` is returned unaligned.
    OpenCV's homography ECC can stop with "the correlation is going to be minimized" even on a
    one-pixel shift of a digit, where the affine model converges (chapter 2's PASS page).
    """
    import cv2

    h, w = ref.shape[:2]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, eps)
    for attempt, motion in enumerate(motions):
        if motion not in _MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; valid: {', '.join(_MOTIONS)}")
        name, rows = _MOTIONS[motion]
        warp = np.eye(3, dtype=np.float32)[:rows]
        try:
            _, warp = cv2.findTransformECC(_grey(ref), _grey(adv), warp, getattr(cv2, name), criteria, None,
                                           gauss_filt_size)
        except cv2.error:
            continue
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        out = (cv2.warpPerspective(adv, warp, (w, h), flags=flags) if rows == 3
               else cv2.warpAffine(adv, warp, (w, h), flags=flags))
        return out.reshape(adv.shape), attempt
    return adv, len(motions)


def pass_score(x_adv: torch.Tensor, x_ref: torch.Tensor, *, border: str = "same",
               motions: tuple[str, ...] = ("homography", "affine"), ecc_iterations: int = 100,
               ecc_eps: float = 1e-5, gauss_filt_size: int = 5, details: bool = False,
               progress: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """PASS of each adversarial image ``x_adv[i]`` against its original ``x_ref[i]`` (N values, float64).

    ECC alignment (``motions`` tried in order, see :func:`ecc_align`; ``ecc_iterations``,
    ``ecc_eps``, ``gauss_filt_size``: the values of chapter 2's specification), then SSIM with
    ``border`` (see the module docstring). With ``details=True`` also returns the boolean flags
    of the pairs where the first motion (the paper's homography) failed; where every motion
    failed, the pair is scored unaligned. ``motions=("homography",)`` is the strict variant.
    OpenCV runs single-threaded here (restored afterwards), leaving the cores to torch.
    """
    import cv2
    from tqdm.auto import tqdm

    a, b = _check(x_adv, x_ref, border, ("x_adv", "x_ref"))
    scores = np.empty(len(a), dtype=np.float64)
    failed = np.zeros(len(a), dtype=bool)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for i in tqdm(range(len(a)), desc="PASS", disable=not progress, leave=False):
            aligned, attempt = ecc_align(a[i], b[i], motions=motions, iterations=ecc_iterations, eps=ecc_eps,
                                         gauss_filt_size=gauss_filt_size)
            failed[i] = attempt > 0
            scores[i] = _ssim_one(aligned, b[i], border)
    finally:
        cv2.setNumThreads(threads)
    out = torch.from_numpy(scores)
    return (out, torch.from_numpy(failed)) if details else out
