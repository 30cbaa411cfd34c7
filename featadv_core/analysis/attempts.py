"""Summaries of line-search attempts in the layout of Rozsa et al.'s Table 1.

Success rate is per *attempt* (1 per origin for FGS and FGV, 9 for hot/cold, 9 per layer for
LOTS), and PASS, L2 and L∞ (grey levels) are mean ± population std over the successful
attempts; the caller decides which origins count (the chapter: those the model classifies
correctly) by filtering the table first.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

__all__ = ["select", "summarise"]


def select(table: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows of an attempt table (a dict of equally long columns) where ``mask`` holds."""
    return {k: v[mask] for k, v in table.items()}


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    v = v[~v.isnan()]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(unbiased=False)) if len(v) > 1 else 0.0


def summarise(table: Mapping[str, torch.Tensor], groups: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """One row per group (name → boolean row mask): attempts, success %, PASS/L2/L∞ mean and std, ECC failures.

    Columns: ``attempts``, ``success_pct``, ``pass_mean``, ``pass_std``, ``l2_mean``, ``l2_std``,
    ``linf_mean``, ``linf_std``, ``ecc_failures`` (among the successful attempts),
    ``zero_direction`` (attempts that failed because their direction was exactly zero).
    """
    rows = {}
    for name, mask in groups.items():
        ok = mask & table["success"]
        row = {"attempts": int(mask.sum()),
               "success_pct": 100 * float(ok.sum()) / max(int(mask.sum()), 1)}
        for col, key in (("pass", "pass"), ("l2", "l2"), ("linf", "linf")):
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(table[key][ok])
        row["ecc_failures"] = int(table["ecc_failed"][ok].sum()) if "ecc_failed" in table else 0
        row["zero_direction"] = int(table["zero_direction"][mask].sum())
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")

