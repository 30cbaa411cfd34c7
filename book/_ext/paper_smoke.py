"""Prepare the paper presets' smoke run: every notebook with its ``<notebook>.paper.yaml`` and ``smoke=True`` on top.

``make paper-smoke`` runs this, then executes the prepared copies with nbval. What a preset needs
from outside is stood in for, honestly and visibly, never skipped:

* image folders (ILSVRC, faces, ImageNet val): a small folder of real CIFAR-10 images from the
  offline copy, upscaled, in the layout the presets document (``<root>/<split>/<class>/*.png``,
  splits ``train``, ``test`` and ``val``), replaces any ``dataset`` that is a path;
* torchvision's pretrained weights: ``FEATADV_WEIGHTS=random`` (set by the Makefile) builds the
  same architectures with random weights, and every card says so;
* the paper-scale recipes (VGG-19 decoder, Madry PGD-7, TRADES K = 10): ``FEATADV_TRAIN_BUDGET=smoke``
  trains them for a few steps on a few images, under their own cache key and card label;
* ``device`` is forced to ``cpu``.

Usage: ``python book/_ext/paper_smoke.py OUT_DIR`` prints the number of presets prepared.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = {"train": 60, "test": 12, "val": 12}  # images per class in the stand-in folder (the smoke settings'
SIZE = 64           # neighbour searches want a few hundred training images); their side in pixels (loaders resize to 224)


def image_folder(out: Path) -> Path:
    """The stand-in image folder: ``PER_CLASS[split]`` CIFAR-10 images per class, as PNGs."""
    import numpy as np
    from PIL import Image

    from featadv_core import data

    root = out / "images"
    if (root / "done").is_file():
        return root
    for split, source in (("train", "train"), ("test", "test"), ("val", "test")):
        x, y = data.load("cifar10", source, n=10 * PER_CLASS[split], seed=1)
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / split / f"class{int(label):02d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).resize((SIZE, SIZE), Image.BILINEAR).save(folder / f"{i:03d}.png")
    (root / "done").write_text("stand-in image folder for the paper presets' smoke run\n")
    return root


def presets() -> list[tuple[Path, Path]]:
    return sorted((nb, nb.with_suffix(".paper.yaml")) for nb in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in nb.parts and nb.with_suffix(".paper.yaml").is_file())


def prepare(out: Path) -> int:
    import yaml

    images = image_folder(out)
    count = 0
    for nb, preset in presets():
        values = yaml.safe_load(preset.read_text()) or {}
        args = ["-f", str(preset), "-p", "smoke", "True", "-p", "device", "cpu"]
        if isinstance(values.get("dataset"), str) and ("/" in values["dataset"] or values["dataset"].startswith("~")):
            args += ["-p", "dataset", str(images.resolve())]
        target = out / f"{nb.parent.name}__{nb.name}"
        subprocess.run([sys.executable, "-m", "papermill", "--prepare-only", str(nb), str(target), *args],
                       check=True, capture_output=True)
        count += 1
    return count


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    print(f"paper-smoke: {prepare(out)} presets prepared in {out}")
