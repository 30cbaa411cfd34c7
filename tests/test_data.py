"""featadv_core.data: the offline loader, stratified subsets, errors."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from featadv_core import data


def _write_npz(folder, name="mnist.npz", n=50, rgb=False, sums=True):
    rng = np.random.default_rng(0)
    shape = (n, 32, 32, 3) if rgb else (n, 28, 28)
    arrays = {
        "x_train": rng.integers(0, 256, shape, dtype=np.uint8),
        "y_train": (np.arange(n) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, shape, dtype=np.uint8),
        "y_test": (np.arange(n) % 10).astype(np.uint8),
    }
    path = folder / name
    np.savez(path, **arrays)
    if sums:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (folder / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    return arrays


@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATADV_DATA_DIR", str(tmp_path))
    data._VERIFIED.clear()
    return tmp_path


def test_load_grey_shapes_range_dtype(fake_dir):
    arrays = _write_npz(fake_dir)
    x, y = data.load("mnist", "train")
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == arrays["y_train"].tolist()
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.allclose(x[3, 0], torch.from_numpy(arrays["x_train"][3]).float() / 255)


def test_load_rgb_is_nchw(fake_dir):
    arrays = _write_npz(fake_dir, "cifar10.npz", rgb=True)
    x, _ = data.load("cifar10", "test")
    assert x.shape == (50, 3, 32, 32)
    assert torch.allclose(x[1].permute(1, 2, 0), torch.from_numpy(arrays["x_test"][1]).float() / 255)


def test_stratified_subset_is_balanced_and_deterministic(fake_dir):
    _write_npz(fake_dir, n=200)
    x1, y1 = data.load("mnist", "train", n=30, seed=3)
    x2, y2 = data.load("mnist", "train", n=30, seed=3)
    _, y3 = data.load("mnist", "train", n=30, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert np.bincount(y1.numpy(), minlength=10).tolist() == [3] * 10
    assert len(y3) == 30


def test_stratified_indices_remainder_and_short_classes():
    labels = np.array([0] * 50 + [1] * 2)
    idx = data.stratified_indices(labels, 11, seed=0)
    assert len(idx) == 11 and len(set(idx)) == 11
    assert (labels[idx] == 1).sum() == 2   # class 1 gives all it has, class 0 tops up
    with pytest.raises(ValueError, match="only 52"):
        data.stratified_indices(labels, 53)


def test_bad_checksum_is_a_clear_error(fake_dir):
    _write_npz(fake_dir)
    (fake_dir / "SHA256SUMS").write_text("0" * 64 + "  mnist.npz\n")
    with pytest.raises(data.DataUnavailableError, match="checksum mismatch"):
        data.load("mnist", "test")


def test_missing_file_in_offline_dir(fake_dir):
    with pytest.raises(data.DataUnavailableError, match="has no fashion_mnist.npz"):
        data.load("fashion_mnist", "test")


def test_unknown_name_and_split(fake_dir):
    _write_npz(fake_dir)
    with pytest.raises(ValueError, match="valid names: mnist, fashion_mnist, cifar10"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="valid splits"):
        data.load("mnist", "validation")


def test_offline_without_copy_says_how_to_fix(monkeypatch, tmp_path):
    """No FEATADV_DATA_DIR and no network: the error names the variable, not a urllib trace."""
    monkeypatch.delenv("FEATADV_DATA_DIR", raising=False)
    monkeypatch.setenv("FEATADV_CACHE", str(tmp_path))

    import torchvision.datasets as tvd

    def no_network(*args, download=False, **kwargs):
        raise RuntimeError("Dataset not found.") if not download else OSError("Network is unreachable")

    monkeypatch.setattr(tvd, "MNIST", no_network)
    with pytest.raises(data.DataUnavailableError, match="FEATADV_DATA_DIR") as info:
        data.load("mnist", "test")
    assert "mnist.npz" in str(info.value)


def test_class_names():
    assert data.class_names("cifar10")[3] == "cat"
    assert len(data.class_names("fashion_mnist")) == 10


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (300 + 10 * i, 260), color=(255, 0, 0) if cls == "cat" else (0, 0, 255)).save(
                tmp_path / cls / f"{i}.jpg")
    x, y, classes = data.load_image_folder(tmp_path, crop=224)
    assert classes == ["cat", "dog"] and x.shape == (6, 3, 224, 224)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x[0, 0].mean() > 0.9 and x[-1, 2].mean() > 0.9
    x2, y2, _ = data.load_image_folder(tmp_path, n=2)
    assert sorted(y2.tolist()) == [0, 1]


def _folder(root, classes, per_class=2):
    from PIL import Image

    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), color=(10 * i, 0, 0)).save(root / cls / f"{i}.png")
    return root


def test_imagenet_wnids_are_torchvision_output_order():
    wnids = data.imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    names = data.imagenet_class_names()
    # known anchors of the ILSVRC-2012 order: tench first, toilet tissue last, tabby cat at 281
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert (wnids[281], names[281]) == ("n02123045", "tabby")
    assert (wnids[999], names[999]) == ("n15075141", "toilet tissue")


def test_ilsvrc_subset_folder_gets_imagenet_labels(tmp_path):
    """A folder of a few ILSVRC classes is labelled as an ImageNet network labels it, not 0..C-1
    (the bug: Fig. 4's and Table 1's presets compared folder indices with 1,000-class predictions)."""
    _folder(tmp_path, ["n02123045", "n01440764"])          # tabby, tench
    x, y, names = data.load_image_folder(tmp_path, crop=32, resize=32)
    assert y.tolist() == [0, 0, 281, 281] and len(names) == 1000 and names[281] == "n02123045"
    _, y_folder, classes = data.load_image_folder(tmp_path, crop=32, resize=32, label_space="folder")
    assert y_folder.tolist() == [0, 0, 1, 1] and classes == ["n01440764", "n02123045"]


def test_image_folder_label_space_errors(tmp_path):
    _folder(tmp_path, ["n02123045", "faces_of_bob"])
    _, y, classes = data.load_image_folder(tmp_path, crop=32, resize=32)   # auto: not all ids → folder
    assert y.tolist() == [0, 0, 1, 1] and classes == ["faces_of_bob", "n02123045"]
    with pytest.raises(ValueError, match="faces_of_bob"):
        data.load_image_folder(tmp_path, label_space="imagenet")
    with pytest.raises(ValueError, match="label_space must be one of"):
        data.load_image_folder(tmp_path, label_space="wordnet")


def test_exact_only_keeps_the_marked_images(fake_dir):
    arrays = _write_npz(fake_dir, "cifar10.npz", rgb=True, sums=False)
    exact = np.zeros(50, dtype=bool)
    exact[[1, 4, 9]] = True
    np.savez(fake_dir / "cifar10.npz", **arrays, exact_train=exact, exact_test=~exact)
    x, y = data.load("cifar10", "train", exact_only=True)
    assert x.shape[0] == 3 and y.tolist() == arrays["y_train"][[1, 4, 9]].tolist()
    assert torch.equal(x[1].permute(1, 2, 0), torch.from_numpy(arrays["x_train"][4]).float() / 255)
    assert len(data.load("cifar10", "test", exact_only=True)[1]) == 47
    assert len(data.load("cifar10", "train")[1]) == 50
    assert "JPEG-decoded except 3 train / 47 test" in data.describe_source("cifar10")


def test_exact_only_is_a_no_op_without_masks(fake_dir):
    _write_npz(fake_dir, sums=False)
    assert len(data.load("mnist", "train", exact_only=True)[1]) == 50
    assert "JPEG" not in data.describe_source("mnist")


@pytest.mark.data
@pytest.mark.parametrize("name,shape,n_train", [
    ("mnist", (1, 28, 28), 60_000), ("fashion_mnist", (1, 28, 28), 60_000), ("cifar10", (3, 32, 32), 50_000)])
def test_offline_copy(offline_dir, name, shape, n_train):
    data._VERIFIED.clear()
    x, y = data.load(name, "train")
    assert x.shape == (n_train, *shape) and 0 <= x.min() and x.max() <= 1
    assert set(y.unique().tolist()) == set(range(10))
    assert data.data_source(name).startswith("offline:")


@pytest.mark.data
def test_offline_cifar10_exact_subset(offline_dir):
    """The full copy's exact images: 4,660 train / 846 test, every class present."""
    data._VERIFIED.clear()
    for split, n in (("train", 4_660), ("test", 846)):
        x, y = data.load("cifar10", split, exact_only=True)
        assert len(y) == n and set(y.unique().tolist()) == set(range(10))
