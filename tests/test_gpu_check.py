"""The GPU check is prepared before a GPU comes: every step it will run names things that exist.

A lent GPU has minutes of budget; a typo in the script must not spend them.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_step_names_existing_notebooks_presets_and_benchmark_options():
    steps = _module()._steps("cuda")
    assert len(steps) == 1 + 2 * 4 + 4
    for name, cmd, limit, extra in steps:
        assert limit > 0
        for arg in cmd:
            if arg.startswith("book/") or arg.startswith("tests/"):
                assert (ROOT / arg).is_file(), f"{name}: {arg} does not exist"
        if name.startswith("bench"):
            script = ROOT / "benchmarks" / cmd[1]
            assert script.is_file(), name
            usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                   cwd=script.parent, check=True).stdout
            options = [a for a in cmd[2:] if a.startswith("--")]
            assert all(opt in usage for opt in options), f"{name}: {options} not all in its --help"
