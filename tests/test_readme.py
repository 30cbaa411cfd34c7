"""The README's "attack your own model" example runs as written (a torchvision model, by layer name)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = "<!-- own-model-example: executed by tests/test_readme.py -->"


def test_own_model_example_runs(capsys):
    text = README.read_text()
    assert MARK in text
    code = re.search(r"```python\n(.*?)```", text[text.index(MARK):], re.S).group(1)
    code = code.replace("steps=20", "steps=3")  # the same calls, fewer iterations
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), scope)
    x_src = scope["x_src"]
    for name in ("x_feat", "x_lots", "x_df"):
        adv = scope[name]
        assert adv.shape == x_src.shape and adv.dtype == x_src.dtype, name
    assert float((scope["x_feat"] - x_src).abs().max()) <= 10 / 255 + 1e-6
    assert bool(((scope["x_lots"] >= 0) & (scope["x_lots"] <= 1)).all())
    assert "layer1.0.relu_1" in capsys.readouterr().out
    assert scope["encoder"](x_src).shape == (2, 128, 16, 16)
