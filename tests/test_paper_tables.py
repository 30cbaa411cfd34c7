"""The chapters' transcriptions of the papers' tables, re-derived from the papers' text (../shared/papers)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT.parent / "shared" / "papers"


def test_lots_table1_csv_matches_every_cell_of_the_paper_text():
    paper = PAPERS / "001_33dc3d008c7df308.txt"
    if not paper.is_file():
        pytest.skip(f"{paper} is not here (the papers live beside the project in ../shared)")
    rows = list(csv.DictReader((ROOT / "featadv_core" / "reference" / "rozsa2017_table1.csv").open()))
    assert len(rows) == 40 and len({r["model"] for r in rows}) == 10
    cell = r"([\d.]+)% \| ([\d.]+) ± ([\d.]+) ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+)"
    found = 0
    for line in paper.read_text().splitlines():
        m = re.match(r"^(Basic LeNet|InfiMNIST|FGS|FGV|HC|LOTS(?: CONV1| CONV2| IP1| IP2)?)\t([\d.]+)%\t(.*)$", line)
        if not m:
            continue
        cells = re.findall(cell, m[3])
        assert len(cells) == 4, line
        for attack, values in zip(["FGS", "FGV", "HC", "LOTS"], cells):
            (row,) = [r for r in rows if r["model"] == m[1] and r["attack"] == attack]
            keys = ["success_pct", "pass_mean", "pass_std", "l2_mean", "l2_std", "linf_mean", "linf_std"]
            assert [row[k] for k in keys] == list(values), (m[1], attack)
            assert row["error_pct"] == m[2]
            found += 1
    assert found == 40


def test_jetley_table1_csv_matches_every_cell_of_the_paper_text():
    paper = PAPERS / "004_117a25e40ebacde0.txt"
    if not paper.is_file():
        pytest.skip(f"{paper} is not here (the papers live beside the project in ../shared)")
    rows = list(csv.reader((ROOT / "featadv_core" / "reference" / "jetley2018_table1.csv").open()))[1:]
    text = [line.split("\t") for line in paper.read_text().splitlines()
            if re.match(r"^(227|200|150|120|100)\t[\d.]+\t", line)]
    assert rows == text and len(rows) == 5


def test_fsa_table2_csv_matches_every_cell_of_the_paper_text():
    paper = PAPERS / "002_85886eed2f4255f1.txt"
    if not paper.is_file():
        pytest.skip(f"{paper} is not here (the papers live beside the project in ../shared)")
    rows = list(csv.reader((ROOT / "featadv_core" / "reference" / "fsa2020_table2.csv").open()))
    lines = paper.read_text().splitlines()
    start = lines.index("Table 2: Evaluation of adversarial attacks against various defense approaches.")
    assert lines[start + 2].split("\t")[1:] == [r[0] for r in rows[1:]]  # the defences, in the paper's order
    for j, attack in enumerate(["None", "PGD", "Decoder", "Feature Space"]):
        cells = lines[start + 3 + j].split("\t")
        assert cells[0] == attack == rows[0][2 + j]
        assert cells[1:] == [r[2 + j] for r in rows[1:]], attack
