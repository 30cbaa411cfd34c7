"""The papers' own tables, transcribed once (tests re-derive them from the papers' text).

They ship with the package so that a notebook opened alone (e.g. on Colab) can set its
numbers beside the paper's. :func:`table` reads one as a DataFrame.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["table", "TABLES"]

_DIR = Path(__file__).resolve().parent
TABLES = {
    "rozsa2017_table1": "Rozsa et al. 2017, Table 1: clean error and FGS/FGV/HC/LOTS success, PASS, L2, L∞ per model",
    "jetley2018_table1": "Jetley et al. 2018, Table 1: ImageNet AlexNet behind a down/up-sampling unit — norms, "
                         "accuracy and fooling rates of f-scaled DeepFools per d_low",
    "fsa2020_table2": "Towards Feature Space Adversarial Attack (2020), Table 2: accuracy (%) of the four defended "
                      "models on clean images (None), PGD, decoder reconstructions and the feature-space attack",
}


def table(name: str):
    """The transcribed table ``name`` (one of :data:`TABLES`) as a pandas DataFrame."""
    import pandas as pd

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
    return pd.read_csv(_DIR / f"{name}.csv")
