"""Figures of the book, one module per kind of figure. Nothing here runs at import time.

* :mod:`.style` — :func:`apply_style`, the book's look (call once per notebook);
* :mod:`.images` — image grids and difference images;
* :mod:`.adversaries` — adversary grids, activation patterns, ratio box plots (Fig. 1–2);
* :mod:`.distributions` — overlaid histograms with shared bins, rank scatters (Fig. 3–4);
* :mod:`.curves` — per-pair statistics against a parameter, grouped bars (Fig. 5, §5);
* :mod:`.tables` — ``mean ± std`` tables and side-by-side differences (Table 2);
* :mod:`.schematic` — diagrams drawn by code (chapter 3's two-phase Fig. 2).
"""
from .images import difference_image, image_grid, to_numpy_image
from .schematic import two_phase_diagram
from .style import apply_style

__all__ = ["apply_style", "image_grid", "to_numpy_image", "difference_image", "two_phase_diagram"]
