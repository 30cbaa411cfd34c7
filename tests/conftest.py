"""Shared fixtures: tiny deterministic models and an isolated cache folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from featadv_core.models import architectures


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test writes its cache entries into its own temporary folder."""
    monkeypatch.setenv("FEATADV_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny_lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.lenet().eval()


@pytest.fixture
def tiny_caffenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.caffenet_cifar().eval()


@pytest.fixture
def offline_dir() -> Path:
    """The offline data folder, or skip when FEATADV_DATA_DIR is unset."""
    value = os.environ.get("FEATADV_DATA_DIR")
    if not value:
        pytest.skip("FEATADV_DATA_DIR is not set")
    return Path(value)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
