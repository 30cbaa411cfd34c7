"""featadv_core.plotting: style and grids (no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch

from featadv_core import plotting


def test_difference_image_maps_zero_to_grey():
    x = torch.zeros(3, 4, 4)
    d = plotting.difference_image(x + 0.1, x)
    assert torch.allclose(d, torch.ones_like(d))
    assert torch.allclose(plotting.difference_image(x, x), torch.full_like(x, 0.5))


def test_image_grid_builds_figure():
    plotting.apply_style()
    imgs = [[torch.rand(3, 8, 8), None], [torch.rand(1, 8, 8), torch.rand(1, 8, 8)]]
    fig = plotting.image_grid(imgs, row_labels=["a", "b"], col_labels=["x", "y"])
    assert len(fig.axes) == 4


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import matplotlib as mpl; before = dict(mpl.rcParams); import featadv_core, "
            "featadv_core.plotting, featadv_core.models, featadv_core.repro; "
            "assert dict(mpl.rcParams) == before")
    subprocess.run([sys.executable, "-c", code], check=True)
