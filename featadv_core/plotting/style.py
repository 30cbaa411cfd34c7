"""The book's matplotlib style, applied on request (importing the core changes no global style)."""
from __future__ import annotations

__all__ = ["apply_style"]


def apply_style() -> None:
    """Set the book's matplotlib style (call once per notebook; importing changes nothing)."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3, "axes.titlesize": 10, "axes.labelsize": 9,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
        "legend.frameon": False, "image.interpolation": "nearest",
    })
