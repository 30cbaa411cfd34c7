"""Tables: per-pair ``mean ± std`` cells (chapter 1, Table 2), side-by-side differences, attack tables (chapter 2, Table 1)."""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from ..analysis.statistics import describe

__all__ = ["mean_std_table", "difference_table", "attack_cells"]


def mean_std_table(columns: Mapping[str, Mapping[Hashable, object]], *, fmt: str = "{:.2f}",
                   rows: Sequence[Hashable] | None = None, index_name: str = "layer"):
    """A DataFrame of ``"mean ± std"`` strings: ``columns[col][row]`` holds per-pair values.

    Row order is ``rows`` (default: the first column's keys); a missing cell is ``""``.
    ``fmt`` formats both numbers (e.g. ``"{:+.2f}"`` for signed differences).
    """
    import pandas as pd

    if rows is None:
        rows = list(next(iter(columns.values()), {}).keys())
    table = {}
    for col, cells in columns.items():
        out = []
        for row in rows:
            if row not in cells:
                out.append("")
                continue
            d = describe(cells[row])
            std = fmt.format(d["std"]).lstrip("+") if math.isfinite(d["std"]) else "–"
            out.append(f"{fmt.format(d['mean'])} ± {std}")
        table[col] = out
    frame = pd.DataFrame(table, index=list(rows))
    frame.index.name = index_name
    return frame


def difference_table(reference: Mapping[tuple, float], other: Mapping[tuple, float], *,
                     names: tuple[str, str] = ("reference", "other"), scale: float = 100.0,
                     index_names: Sequence[str] = ("layer", "δ"), unit: str = "pp"):
    """``reference`` and ``other`` side by side with ``other − reference``, absolute and relative.

    Both map the same keys (e.g. ``(layer, δ)``) to one number each (e.g. a median distance
    ratio). Columns: the two values, ``Δ (<unit>)`` = ``scale · (other − reference)``
    (percentage points of the ratio with the default ``scale=100``) and ``Δ relative (%)`` =
    ``100 · (other − reference) / reference``. Keys of ``reference`` missing from ``other`` are
    a ``KeyError``. The index is a MultiIndex named ``index_names`` when the keys are tuples.
    """
    import pandas as pd

    keys = list(reference)
    missing = [k for k in keys if k not in other]
    if missing:
        raise KeyError(f"keys missing from the second mapping: {missing}")
    ref = np.array([float(reference[k]) for k in keys])
    oth = np.array([float(other[k]) for k in keys])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * (oth - ref) / ref
    index = (pd.MultiIndex.from_tuples(keys, names=list(index_names))
             if keys and isinstance(keys[0], tuple) else pd.Index(keys, name=index_names[0]))
    return pd.DataFrame({names[0]: ref, names[1]: oth, f"Δ ({unit})": scale * (oth - ref),
                         "Δ relative (%)": rel}, index=index)


def attack_cells(summary, *, attacks: Sequence[str], models: Sequence[str], error: Mapping[str, float] | None = None):
    """Rozsa et al.'s Table 1 layout: one row per model, one ``success | PASS ± / L2 ± | L∞ ±`` cell per attack.

    ``summary`` is a long DataFrame indexed by ``(model, attack)`` with the columns of
    :func:`featadv_core.analysis.summarise` (``success_pct``, ``pass_mean``, ``pass_std``,
    ``l2_mean``, …); ``error`` (model → clean error in %) adds the first column. Missing cells
    are ``""``.
    """
    import pandas as pd

    def cell(row) -> str:
        return (f"{row.success_pct:.2f}% | {row.pass_mean:.4f} ± {row.pass_std:.4f} / "
                f"{row.l2_mean:.1f} ± {row.l2_std:.1f} | {row.linf_mean:.1f} ± {row.linf_std:.1f}")

    table = {}
    if error is not None:
        table["error"] = [f"{error[m]:.2f}%" if m in error else "" for m in models]
    for attack in attacks:
        table[attack] = [cell(summary.loc[(m, attack)]) if (m, attack) in summary.index else "" for m in models]
    frame = pd.DataFrame(table, index=list(models))
    frame.index.name = "model"
    return frame
