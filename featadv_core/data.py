"""Datasets as float tensors in [0, 1], N×C×H×W, with int64 labels.

Two sources, tried in this order:

1. **Offline copy.** When the environment variable ``FEATADV_DATA_DIR`` names a folder, the
   ``.npz`` files there are read (format: ``x_train, y_train, x_test, y_test`` as uint8,
   images ``N×H×W`` or ``N×H×W×3``). If the folder has a ``SHA256SUMS`` file, every file read
   is checked against it.
2. **torchvision download** into ``FEATADV_CACHE`` (default ``~/.cache/featadv``), the
   canonical full datasets, for machines with internet.

Also :func:`load_image_folder` for ImageNet-style folders (``root/<class>/<image>``), resized
and centre-cropped as torchvision's ImageNet models expect, for paper-scale runs. A folder whose
class folders are ImageNet WordNet ids (``n01440764``, ...) is labelled in ImageNet's 1,000-class
space, so its labels are the outputs of an ImageNet network even when it holds a subset of the
classes (:func:`imagenet_wnids`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DataUnavailableError",
    "cache_dir",
    "class_names",
    "data_source",
    "describe_source",
    "load",
    "LABEL_SPACES",
    "imagenet_class_names",
    "imagenet_wnids",
    "image_folder_classes",
    "load_image_folder",
    "stratified_indices",
]

DATA_ENV = "FEATADV_DATA_DIR"
CACHE_ENV = "FEATADV_CACHE"


class DataUnavailableError(RuntimeError):
    """The data cannot be had from any source; the message says how to fix that."""


@dataclass(frozen=True)
class _Spec:
    npz: str                    # file name of the offline copy
    torchvision: str            # torchvision.datasets class name
    classes: tuple[str, ...]


DATASETS: dict[str, _Spec] = {
    "mnist": _Spec("mnist.npz", "MNIST", tuple(str(i) for i in range(10))),
    "fashion_mnist": _Spec(
        "fashion_mnist.npz",
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": _Spec(
        "cifar10.npz",
        "CIFAR10",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
    ),
}
SPLITS = ("train", "test")


def _check_name(name: str) -> _Spec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def class_names(name: str) -> list[str]:
    """The class names of dataset ``name``, in label order."""
    return list(_check_name(name).classes)


def cache_dir() -> Path:
    """Where downloads, trained checkpoints and cached results live (``FEATADV_CACHE``)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "featadv")).expanduser()


def _offline_dir() -> Path | None:
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


_VERIFIED: dict[Path, str] = {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_file(folder: Path, filename: str) -> Path:
    """Path of ``folder/filename`` after checking it against ``folder/SHA256SUMS``."""
    path = folder / filename
    if not path.is_file():
        raise DataUnavailableError(
            f"{DATA_ENV}={folder} has no {filename}; put the offline copy there "
            "(see data/README.md) or unset the variable to download with torchvision."
        )
    resolved = path.resolve()
    if resolved in _VERIFIED:
        return path
    sums = folder / "SHA256SUMS"
    digest = _sha256(path)
    if sums.is_file():
        expected = {}
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                expected[parts[1].lstrip("*")] = parts[0].lower()
        if filename in expected and expected[filename] != digest:
            raise DataUnavailableError(
                f"checksum mismatch for {path}: SHA256SUMS says {expected[filename]}, the file "
                f"hashes to {digest}. The copy is damaged or altered; fetch it again."
            )
    _VERIFIED[resolved] = digest
    return path


def data_source(name: str) -> str:
    """A string naming where ``load(name, ...)`` reads from, for cache keys.

    ``"offline:<sha256>"`` for the offline copy (so a different copy gives a different key),
    else ``"torchvision"``.
    """
    spec = _check_name(name)
    folder = _offline_dir()
    if folder is not None:
        path = _verified_file(folder, spec.npz)
        return f"offline:{_VERIFIED[path.resolve()]}"
    return "torchvision"


def describe_source(name: str) -> str:
    """In words, where ``load(name, ...)`` reads from and how that differs from the original."""
    spec = _check_name(name)
    folder = _offline_dir()
    if folder is None:
        return f"torchvision's {spec.torchvision} (the original files)"
    path = _verified_file(folder, spec.npz)
    with np.load(path) as archive:
        exact = {s: int(archive[f"exact_{s}"].sum()) for s in SPLITS if f"exact_{s}" in archive}
        sizes = {s: len(archive[f"y_{s}"]) for s in SPLITS}
    text = f"offline copy {path.name} ({sizes['train']:,} train / {sizes['test']:,} test"
    if exact:
        text += (f"; JPEG-decoded except {exact['train']:,} train / {exact['test']:,} test images"
                 " with the original pixels")
    return text + ")"


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``N×H×W`` or ``N×H×W×C`` → float32 ``N×C×H×W`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous().float().div_(255.0)


def _load_offline(folder: Path, spec: _Spec, split: str, exact_only: bool) -> tuple[np.ndarray, np.ndarray]:
    path = _verified_file(folder, spec.npz)
    with np.load(path) as archive:
        key = f"x_{split}"
        if key not in archive:
            raise DataUnavailableError(f"{path} holds no {split!r} split (keys: {sorted(archive)})")
        images, labels = archive[key], archive[f"y_{split}"]
        if exact_only and f"exact_{split}" in archive:  # a lossy copy marks its exact images
            keep = archive[f"exact_{split}"].astype(bool)
            images, labels = images[keep], labels[keep]
        return images, labels


def _load_torchvision(spec: _Spec, split: str) -> tuple[np.ndarray, np.ndarray]:
    root = cache_dir() / "datasets"
    try:
        import torchvision.datasets as tvd

        dataset_cls = getattr(tvd, spec.torchvision)
        try:  # already downloaded: no network needed
            ds = dataset_cls(str(root), train=(split == "train"), download=False)
        except RuntimeError:
            ds = dataset_cls(str(root), train=(split == "train"), download=True)
    except Exception as exc:  # network errors come in many types (URLError, socket, HTTP...)
        raise DataUnavailableError(
            f"{spec.torchvision} ({split}) is not available: {DATA_ENV} is unset and the "
            f"torchvision download into {root} failed. On a machine without internet, set "
            f"{DATA_ENV} to a folder holding {spec.npz} (see data/README.md).\n"
            f"(torchvision said: {type(exc).__name__}: {str(exc).strip()})"
        ) from None
    images = np.asarray(ds.data)
    labels = np.asarray(ds.targets)
    return images, labels


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset of size ``n``, deterministic in ``seed``.

    Each class gets ``n // C`` items; the remainder goes to classes chosen at random. A class
    with too few items gives what it has and the rest is taken from the others. The indices
    are returned sorted, so the subset keeps the dataset's order.
    """
    labels = np.asarray(labels)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if n > len(labels):
        raise ValueError(f"asked for n={n} items but the split has only {len(labels)}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: n // len(classes) for c in classes}
    for c in rng.choice(classes, size=n % len(classes), replace=False):
        quota[c] += 1
    chosen = [pools[c][: quota[c]] for c in classes]
    short = n - sum(len(part) for part in chosen)
    if short:  # some class ran out: top up from the unused items of the others
        rest = rng.permutation(np.concatenate([pools[c][quota[c]:] for c in classes]))
        chosen.append(rest[:short])
    return np.sort(np.concatenate(chosen))


def load(name: str, split: str, *, n: int | None = None, seed: int = 0,
         exact_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``split`` ("train"/"test") of dataset ``name``.

    Returns ``x`` float32 N×C×H×W in [0, 1] and ``y`` int64 of shape N. With ``n``, a
    stratified subset of ``n`` items chosen deterministically from ``seed``. With
    ``exact_only``, only images whose pixels are the original dataset's: the offline CIFAR-10
    copy is JPEG-decoded except 4,660 train / 846 test images (its ``exact_*`` masks), so a
    check that must not depend on JPEG artefacts asks for those; every other source is exact
    throughout and the flag changes nothing there.
    """
    spec = _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    folder = _offline_dir()
    images, labels = (_load_offline(folder, spec, split, exact_only) if folder
                      else _load_torchvision(spec, split))
    labels = np.asarray(labels).astype(np.int64)
    if n is not None:
        idx = stratified_indices(labels, n, seed)
        images, labels = images[idx], labels[idx]
    return _to_tensor(images), torch.from_numpy(labels)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".JPEG", ".JPG", ".PNG")


_WNIDS_FILE = Path(__file__).resolve().parent / "data_files" / "imagenet1k_wnids.txt"
_WNID = re.compile(r"n\d{8}")
LABEL_SPACES = ("auto", "imagenet", "folder")


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 class ids (WordNet ``n########``) in output order.

    ImageNet networks (torchvision's, Caffe's) number their outputs by the sorted ids, so a folder
    holding all 1,000 classes gets the same labels from its sorted folder names; a folder holding a
    subset needs this list to map its classes onto the network's outputs.
    """
    return tuple(line for line in _WNIDS_FILE.read_text().split() if _WNID.fullmatch(line))


def imagenet_class_names() -> list[str]:
    """The human-readable names of the 1,000 ImageNet classes, in output order (torchvision's list)."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def image_folder_classes(root: str | os.PathLike, label_space: str = "auto") -> tuple[list[str], str]:
    """The class folders of ``root`` (sorted) and the label space they resolve to (see :func:`load_image_folder`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root} holds no class sub-folders (expected root/<class>/<image>)")
    return classes, _folder_label_space(classes, label_space)


def _folder_label_space(classes: list[str], label_space: str) -> str:
    if label_space not in LABEL_SPACES:
        raise ValueError(f"label_space must be one of {LABEL_SPACES}, got {label_space!r}")
    known = set(imagenet_wnids())
    foreign = [c for c in classes if c not in known]
    if label_space == "imagenet" and foreign:
        raise ValueError(f"label_space='imagenet' needs ImageNet-1k WordNet ids as class folder names "
                         f"(e.g. n01440764); these are not: {', '.join(foreign[:5])}"
                         + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""))
    if label_space == "auto":
        return "folder" if foreign else "imagenet"
    return label_space


def load_image_folder(
    root: str | os.PathLike,
    *,
    n: int | None = None,
    seed: int = 0,
    resize: int = 256,
    crop: int = 224,
    label_space: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Load an ImageNet-style folder ``root/<class>/<image>`` for paper-scale runs.

    Images are resized (shorter side to ``resize``) and centre-cropped to ``crop``×``crop``,
    as torchvision's ImageNet models expect, and returned as float32 N×3×H×W in [0, 1] with
    int64 labels and the class names the labels index (returned third). With ``n``, a stratified
    subset chosen from ``seed``.

    ``label_space`` says what a label counts: ``"imagenet"`` — the class folders are ImageNet-1k
    WordNet ids and a label is the class's ImageNet output index (the names are then all 1,000
    ids), so an ILSVRC subset is labelled as an ImageNet network labels it; ``"folder"`` — the
    index of the class in the sorted folder names (a face folder, any other dataset);
    ``"auto"`` (default) — ``"imagenet"`` when every class folder is an ImageNet id, else
    ``"folder"``. A folder of all 1,000 ILSVRC classes gets the same labels either way.
    """
    from PIL import Image

    root = Path(root).expanduser()
    classes, space = image_folder_classes(root, label_space)
    if space == "imagenet":
        names = list(imagenet_wnids())
        index = {wnid: i for i, wnid in enumerate(names)}
    else:
        names = classes
        index = {cls: i for i, cls in enumerate(classes)}
    files, labels = [], []
    for cls in classes:
        for path in sorted((root / cls).iterdir()):
            if path.suffix in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(index[cls])
    if not files:
        raise ValueError(f"no images with suffixes {IMAGE_SUFFIXES} under {root}")
    labels_np = np.asarray(labels, dtype=np.int64)
    idx = stratified_indices(labels_np, n, seed) if n is not None else np.arange(len(files))
    out = torch.empty(len(idx), 3, crop, crop)
    for row, i in enumerate(idx):
        with Image.open(files[i]) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resize / min(w, h)
            img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - crop) // 2, (h - crop) // 2
            img = img.crop((left, top, left + crop, top + crop))
            out[row] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return out, torch.from_numpy(labels_np[idx]), names
