"""The GPU check: one prepared script for a lent CUDA machine (``make gpu-check``), ≈ 8 minutes on one GPU.

It runs, in order, each step with a time limit, and prints one summary table (also written as
JSON, with the machine, to ``benchmarks/results/gpu_check.json``):

1. the unit tests that exercise the device paths (``tests/test_devices.py`` runs its CUDA-only
   tests where CUDA exists; the torchrun, feature-extraction and projected-loop tests);
2. one notebook per chapter in smoke mode with ``device=cuda``;
3. one paper preset per chapter in smoke mode (random torchvision weights, a few training steps
   for the paper-scale recipes) with ``device=cuda``;
4. the benchmarks' GPU rows at reduced sizes (peers skipped): solver overhead, FSA/PGD overhead,
   DeepFool, LOTS attempts.

Nothing here is needed on a CPU machine (CI has no GPU); on one it still runs, slower, and the
table says ``device: cpu``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ONE_PER_CHAPTER = ["book/01_sabour2016/fig5_ratio_vs_delta.ipynb", "book/02_rozsa2017/fig3_targeted.ipynb",
                   "book/03_featurespace2020/decoder_quality.ipynb", "book/04_jetley2018/fig1_traces.ipynb"]
BENCH = [
    ["solver_overhead.py", "--pairs", "64", "--steps", "50"],
    ["fsa_speed.py", "--images", "64", "--steps", "20", "--skip-art"],
    ["deepfool_peers.py", "--images", "500", "--skip", "torchattacks", "foolbox", "art"],
    ["lots_attempts.py", "--skip-art"],
]


def _steps(device: str) -> list[tuple[str, list[str], int, dict]]:
    out = ROOT / "_build" / "gpu-check"
    steps = [("unit tests: device paths", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py",
                                           "tests/test_distributed.py", "tests/test_features.py",
                                           "tests/test_projected.py"], 180, {})]
    for nb in ONE_PER_CHAPTER:
        target = out / f"smoke__{Path(nb).name}"
        steps.append((f"smoke {nb} on {device}",
                      [PY, "-m", "papermill", nb, str(target), "-p", "smoke", "True", "-p", "device", device], 180, {}))
        target = out / f"paper__{Path(nb).name}"
        steps.append((f"paper preset {nb} on {device}",
                      [PY, "-m", "papermill", nb, str(target), "-f", nb.replace(".ipynb", ".paper.yaml"),
                       "-p", "smoke", "True", "-p", "device", device], 240,
                      {"FEATADV_WEIGHTS": "random", "FEATADV_TRAIN_BUDGET": "smoke"}))
    for bench in BENCH:
        steps.append((f"bench {bench[0]}", [PY, bench[0], *bench[1:], "--device", device, "--json",
                                            f"results/gpu_{Path(bench[0]).stem}.json"], 240, {"_cwd": "benchmarks"}))
    return steps


def main() -> int:
    import os
    import platform

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name, cmd, limit, extra in _steps(device):
        cwd = ROOT / extra.pop("_cwd", ".")
        env = dict(os.environ, **extra)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
            status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit} s"
        rows.append({"step": name, "seconds": round(time.perf_counter() - start, 1), "status": status})
        print(f"{rows[-1]['seconds']:7.1f} s  {name}: {status.splitlines()[0] if status else ''}", flush=True)
    machine = {"device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
               "torch": torch.__version__, "python": platform.python_version()}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "gpu_check.json").write_text(json.dumps({"machine": machine, "steps": rows},
                                                                              indent=1) + "\n")
    print("\n| step | seconds | status |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['step']} | {r['seconds']} | {r['status'].splitlines()[0] if r['status'] else ''} |")
    print(f"\nmachine: {machine}; total {sum(r['seconds'] for r in rows):.0f} s")
    return int(any(r["status"] != "ok" for r in rows))


if __name__ == "__main__":
    raise SystemExit(main())
