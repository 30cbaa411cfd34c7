"""Prepare the paper presets' smoke run: every notebook with its ``<notebook>.paper.yaml`` and ``smoke=True`` on top.

``make paper-smoke`` runs this, then executes the prepared copies with nbval. What a preset needs
from outside is stood in for, honestly and visibly, never skipped:

* image folders (ILSVRC, faces, ImageNet val): small folders of real CIFAR-10 images from the
  offline copy, upscaled, in the layout the presets document (``<root>/<split>/<class>/*.png``,
  splits ``train``, ``test`` and ``val``), replace any ``dataset`` that is a path: an ILSVRC
  stand-in whose class folders are the ImageNet WordNet ids of the nearest ImageNet class
  (airplane → airliner, ...; so the labels are ImageNet's, as on a real ILSVRC subset), and for a
  face folder one with plain class names (labelled by folder);
* torchvision's pretrained weights: ``FEATADV_WEIGHTS=random`` (set by the Makefile) builds the
  same architectures with random weights, and every card says so;
* the paper-scale recipes (VGG-19 decoder, Madry PGD-7, TRADES K = 10): ``FEATADV_TRAIN_BUDGET=smoke``
  trains them for a few steps on a few images, under their own cache key and card label;
* ``device`` is forced to ``cpu``;
* what a random network cannot do is switched off where a protocol needs it, each named in
  :data:`RANDOM_WEIGHT_OVERRIDES` with its reason.

Usage: ``python book/_ext/paper_smoke.py OUT_DIR`` prints the number of presets prepared.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = {"train": 60, "test": 12, "val": 12}  # images per class in the stand-in folder (the smoke settings'
SIZE = 64           # neighbour searches want a few hundred training images); their side in pixels (loaders resize to 224)
# CIFAR-10's classes as ImageNet-1k classes (WordNet ids): airliner, beach wagon, brambling, tabby, gazelle,
# golden retriever, bullfrog, sorrel, container ship, trailer truck. (ImageNet has no deer; gazelle is the nearest.)
IMAGENET_WNIDS = ("n02690373", "n02814533", "n01530575", "n02123045", "n02423022",
                  "n02099601", "n01641577", "n02389026", "n03095699", "n04467665")
# Protocol steps a network with random weights cannot meet: {notebook: {parameter: (value, why)}}.
RANDOM_WEIGHT_OVERRIDES = {
    "table1_neighbours.ipynb": {"guide_correct": (False, "a random network classifies no guide correctly")},
    "natural_images.ipynb": {"correct_only": (False, "a random network classifies no source or guide correctly"),
                             "curvature": (None, "Algorithm 1's DeepFool finds no class boundary of a random network")},
    "hardened.ipynb": {"correct_only": (False, "a random network classifies no source or guide correctly")},
}


def image_folder(out: Path, kind: str) -> Path:
    """A stand-in image folder (``kind`` ``"ilsvrc"`` or ``"faces"``): ``PER_CLASS[split]`` CIFAR-10 images
    per class, as PNGs, in class folders named by ImageNet WordNet ids (ILSVRC) or ``personNN`` (faces)."""
    import numpy as np
    from PIL import Image

    from featadv_core import data

    root = out / "images" / kind
    if (root / "done").is_file():
        return root
    for split, source in (("train", "train"), ("test", "test"), ("val", "test")):
        x, y = data.load("cifar10", source, n=10 * PER_CLASS[split], seed=1)
        for i, (img, label) in enumerate(zip(x, y)):
            name = IMAGENET_WNIDS[int(label)] if kind == "ilsvrc" else f"person{int(label):02d}"
            folder = root / split / name
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

    count = 0
    for nb, preset in presets():
        values = yaml.safe_load(preset.read_text()) or {}
        args = ["-f", str(preset), "-p", "smoke", "True", "-p", "device", "cpu"]
        dataset = values.get("dataset")
        if isinstance(dataset, str) and ("/" in dataset or dataset.startswith("~")):
            kind = "faces" if "face" in Path(dataset).name else "ilsvrc"
            args += ["-p", "dataset", str(image_folder(out, kind).resolve())]
        for name, (value, why) in RANDOM_WEIGHT_OVERRIDES.get(nb.name, {}).items():
            args += ["-p", name, str(value)]
            print(f"paper-smoke: {nb.name}: {name} = {value} ({why})")
        target = out / f"{nb.parent.name}__{nb.name}"
        subprocess.run([sys.executable, "-m", "papermill", "--prepare-only", str(nb), str(target), *args],
                       check=True, capture_output=True)
        count += 1
    return count


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    print(f"paper-smoke: {prepare(out)} presets prepared in {out}")
