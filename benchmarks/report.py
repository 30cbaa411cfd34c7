"""Shared by the benchmarks: markdown tables on stdout, with ``--json`` a machine-readable record, and timing.

Every benchmark builds its results as :func:`table` dicts and calls :func:`emit`, which prints
them and, given a path, writes ``{"benchmark", "created", "command", "machine", "context",
"tables"}`` — the machine it ran on included (CPU model, cores, torch threads and version, GPU
if any), so the book's Speed page can say plainly what is CPU and what is GPU.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

__all__ = ["machine", "table", "emit", "best_of"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> dict:
    """The machine a benchmark ran on."""
    dev = torch.device(device)
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def table(title: str, columns: list[str], rows: list[list], notes: str = "") -> dict:
    """One result table: ``rows`` are lists of cells (numbers stay numbers in the JSON)."""
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"every row of {title!r} needs {len(columns)} cells")
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "notes": notes}


def best_of(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()``, after one warm-up call."""
    fn()
    out = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - start)
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}"
    return "–" if v is None else str(v)


def emit(name: str, tables: list[dict], *, device: torch.device | str = "cpu", context: dict | None = None,
         json_path: str | None = None) -> dict:
    """Print ``tables`` as markdown; write the record to ``json_path`` when given. Returns the record."""
    record = {"benchmark": name, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(device),
              "context": context or {}, "tables": tables}
    print(f"\n{name} — {record['machine']['cpu']}, {record['machine']['torch_threads']} torch threads, "
          f"device {record['machine']['device']}" + (f" ({record['machine']['gpu']})" if record["machine"]["gpu"] else ""))
    for t in tables:
        print(f"\n### {t['title']}\n")
        print("| " + " | ".join(t["columns"]) + " |")
        print("| " + " | ".join("---" for _ in t["columns"]) + " |")
        for row in t["rows"]:
            print("| " + " | ".join(_cell(v) for v in row) + " |")
        if t["notes"]:
            print(f"\n{t['notes']}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record
