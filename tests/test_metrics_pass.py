"""SSIM and PASS (Rozsa et al. 2016): known answers, the translation check, border variants, ECC failure."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featadv_core.metrics import pass_score, ssim


def _blobs(n: int, seed: int, size: int = 28, channels: int = 1) -> torch.Tensor:
    """Smooth digit-like images: random low-resolution strokes upsampled, on a dark 4-pixel frame."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 6, 6, generator=gen, dtype=torch.float64) ** 3
    img = F.interpolate(low, size=(size - 8, size - 8), mode="bicubic", align_corners=False).clamp(0, 1)
    img = F.pad(img, (4, 4, 4, 4))
    return torch.round(img * 255) / 255


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), border=st.sampled_from(["same", "valid"]))
def test_pass_of_an_image_with_itself_is_one(seed, border):
    x = _blobs(2, seed)
    scores, failed = pass_score(x, x, border=border, details=True)
    assert torch.allclose(scores, torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ssim(x, x, border=border), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert not bool(failed.any())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), shift=st.sampled_from([(0, 1), (1, 0), (0, -1), (-1, 1)]))
def test_a_one_pixel_translated_copy_is_realigned(seed, shift):
    x = _blobs(1, seed)
    moved = torch.roll(x, shifts=shift, dims=(2, 3))  # the dark frame keeps the content from wrapping
    score = float(pass_score(moved, x)[0])
    assert score >= 0.99
    assert score > float(ssim(moved, x)[0])  # the alignment is what recovers the similarity


def test_ecc_failure_is_flagged_and_the_pair_scored_unaligned_when_every_motion_fails():
    flat = torch.full((1, 1, 28, 28), 0.5, dtype=torch.float64)  # ECC cannot correlate a constant image
    noisy = _blobs(1, 3)
    scores, failed = pass_score(noisy, flat, details=True)
    assert bool(failed[0])
    assert float(scores[0]) == pytest.approx(float(ssim(noisy, flat)[0]))
    with pytest.raises(ValueError, match="motion"):
        pass_score(noisy, flat, motions=("projective",))


@pytest.mark.data
def test_opencv_homography_ecc_fails_on_a_shifted_digit_where_the_affine_fallback_realigns_it(offline_dir):
    """A limitation of OpenCV's ECC (not of PASS): shown on MNIST test digit 57, shifted right by one pixel."""
    from featadv_core import data

    x, _ = data.load("mnist", "test")
    digit = x[57:58]
    moved = torch.roll(digit, shifts=(0, 1), dims=(2, 3))
    strict, strict_failed = pass_score(moved, digit, motions=("homography",), details=True)
    fallback, failed = pass_score(moved, digit, details=True)
    assert bool(strict_failed[0]) and float(strict[0]) < 0.8  # homography gave up: scored unaligned
    assert bool(failed[0]) and float(fallback[0]) >= 0.99     # flagged, and the affine model realigned it


def test_the_valid_border_variant_ignores_what_the_full_image_mean_counts():
    x = _blobs(1, 5)
    frame = torch.zeros_like(x)
    frame[..., :2, :] = frame[..., -2:, :] = frame[..., :, :2] = frame[..., :, -2:] = 1
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.round(torch.where(frame.bool(), noise, x) * 255) / 255
    same, valid = float(ssim(y, x, border="same")[0]), float(ssim(y, x, border="valid")[0])
    assert same < valid < 1


def test_colour_images_are_aligned_on_grey_and_scored_over_channels():
    x = _blobs(2, 11, size=32, channels=3)
    moved = torch.roll(x, shifts=(1, 0), dims=(2, 3))
    scores, failed = pass_score(moved, x, details=True)
    assert scores.shape == (2,) and not bool(failed.any()) and bool((scores > 0.98).all())
    assert torch.allclose(pass_score(x, x), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_bad_input_raises_clear_errors():
    x = _blobs(2, 0)
    with pytest.raises(ValueError, match="same shape"):
        pass_score(x, x[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pass_score(x * 2, x)
    with pytest.raises(ValueError, match="11×11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="border"):
        ssim(x, x, border="reflect")
