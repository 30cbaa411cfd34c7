"""Box constraints: validation, the exact L∞ box, projection, 8-bit quantisation."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featadv_core.attacks import check_images, linf_box, project, quantize

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _exact_within(x: torch.Tensor, x_src: torch.Tensor, eps) -> bool:
    """``|x − x_src| ≤ eps`` in exact rational arithmetic, element by element."""
    e = torch.as_tensor(eps, dtype=torch.float64).expand(x.shape[0]).tolist()
    for i, (a_img, b_img) in enumerate(zip(x.double().flatten(1).tolist(), x_src.double().flatten(1).tolist())):
        bound = Fraction(e[i])
        for a, b in zip(a_img, b_img):
            if abs(Fraction(a) - Fraction(b)) > bound:
                return False
    return True


def test_check_images_accepts_valid_batch():
    check_images(torch.rand(2, 3, 4, 4), "x")


@pytest.mark.parametrize("bad, words", [
    (torch.rand(3, 4, 4), "4-D"),
    (torch.randint(0, 255, (1, 3, 4, 4)), "floating"),
    (torch.rand(1, 1, 2, 2) + 1.5, "[0, 1]"),
    (torch.full((1, 1, 2, 2), float("nan")), "[0, 1]"),
    ([[0.5]], "torch.Tensor"),
])
def test_check_images_rejects(bad, words):
    with pytest.raises(ValueError, match="my_images") as err:
        check_images(bad, "my_images")
    assert words in str(err.value)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), n=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
       eps=st.one_of(st.sampled_from([1 / 255, 5 / 255, 10 / 255, 16 / 255, 0.1, 0.3, 1.0, 2.0]),
                     st.floats(1e-6, 1.5)),
       grid=st.booleans())
def test_linf_box_is_exact(dtype, n, seed, eps, grid):
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.rand(n, 2, 3, 3, generator=gen, dtype=torch.float64)
    if grid:  # 8-bit images, where x ± eps often lands exactly between representable values
        x64 = torch.round(x64 * 255) / 255
    x = x64.to(dtype)
    lo, hi = linf_box(x, eps)
    assert lo.dtype == hi.dtype == dtype and lo.shape == hi.shape == x.shape
    assert bool((lo >= 0).all()) and bool((hi <= 1).all()) and bool((lo <= x).all()) and bool((x <= hi).all())
    assert _exact_within(lo, x, eps) and _exact_within(hi, x, eps)
    # in the dtype's own arithmetic too, for the bounds and for points in between
    t = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    mid = project((lo.double() + t * (hi.double() - lo.double())).to(dtype), lo, hi)
    for pt in (lo, hi, mid):
        assert bool(((pt - x).abs() <= eps).all())
    assert _exact_within(mid, x, eps)
    # the box is tight: one representable step outwards leaves it (unless clipped at 0/1)
    outer_lo = torch.nextafter(lo, torch.full_like(lo, -1.0))
    inside = (lo > 0)
    violates = torch.tensor([
        abs(Fraction(a) - Fraction(b)) > Fraction(eps)
        for a, b in zip(outer_lo[inside].double().tolist(), x[inside].double().tolist())
    ], dtype=torch.bool)
    assert bool(violates.all())


def test_linf_box_per_sample_eps_and_errors():
    x = torch.full((3, 1, 2, 2), 0.5)
    lo, hi = linf_box(x, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(hi[:, 0, 0, 0], torch.tensor([0.6, 0.7, 0.8]))
    assert _exact_within(lo, x, torch.tensor([0.1, 0.2, 0.3]))
    for bad in (0.0, -0.1, float("nan"), torch.tensor([0.1, 0.0, 0.2])):
        with pytest.raises(ValueError, match="eps"):
            linf_box(x, bad)
    with pytest.raises(ValueError, match="per-sample"):
        linf_box(x, torch.tensor([0.1, 0.2]))


def test_linf_box_clips_to_unit_interval():
    x = torch.tensor([0.0, 0.02, 0.99, 1.0]).view(1, 1, 2, 2)
    lo, hi = linf_box(x, 0.05)
    assert lo.flatten()[0] == 0 and lo.flatten()[1] == 0 and hi.flatten()[2] == 1 and hi.flatten()[3] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_clips_last(dtype):
    lo = torch.tensor([0.2, 0.2, 0.5]).to(dtype)
    hi = torch.tensor([0.4, 0.4, 0.3]).to(dtype)  # inconsistent last entry: lo wins
    x = torch.tensor([0.0, 0.9, 0.4]).to(dtype)
    out = project(x, lo, hi)
    assert out.dtype == dtype
    assert out.tolist() == [lo[0].item(), hi[1].item(), lo[2].item()]


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**31 - 1),
       eps=st.sampled_from([0.5 / 255, 1 / 255, 3 / 255, 10 / 255, 0.2]))
def test_quantize_on_grid_and_in_box(dtype, seed, eps):
    gen = torch.Generator().manual_seed(seed)
    x_src = (torch.rand(3, 2, 4, 4, generator=gen, dtype=torch.float64)).to(dtype)
    lo, hi = linf_box(x_src, eps)
    x = (x_src.double() + (torch.rand(x_src.shape, generator=gen, dtype=torch.float64) * 4 - 2) * eps).to(dtype)
    q = quantize(x, lo, hi)
    assert q.dtype == dtype
    assert bool((q >= lo).all()) and bool((q <= hi).all())
    xp = project(x, lo, hi)
    grid = (torch.arange(256, dtype=torch.float64) / 255).to(dtype)          # the dtype's k/255
    inside = (grid >= lo.flatten()[:, None]) & (grid <= hi.flatten()[:, None])  # [pixels, 256]
    has_grid = inside.any(1)
    dist = (grid.double() - xp.flatten().double()[:, None]).abs().masked_fill(~inside, float("inf"))
    qf = q.flatten()
    assert bool(torch.isin(qf[has_grid], grid).all())                           # on the grid
    assert bool(((qf.double() - xp.flatten().double()).abs()[has_grid] <= dist.min(1).values[has_grid] + 1e-12).all())
    assert torch.equal(qf[~has_grid], xp.flatten()[~has_grid])                  # no grid point: unchanged


def test_quantize_exact_values():
    x_src = torch.tensor([[[[100 / 255, 0.0, 1.0, 0.5]]]])
    lo, hi = linf_box(x_src, 2 / 255)
    x = torch.tensor([[[[101.4 / 255, 0.004, 0.9999, 0.5]]]])
    q = quantize(x, lo, hi)
    assert torch.equal(q, torch.tensor([[[[101 / 255, 1 / 255, 1.0, 128 / 255]]]]))
    assert bool((q >= lo).all() and (q <= hi).all())
