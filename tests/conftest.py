"""Shared fixtures: a tiny synthetic MNIST in real IDX format, and the real one where available."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import idx

REPO = Path(__file__).resolve().parents[1]


def write_mnist(folder: Path, n_train: int = 256, n_test: int = 64, seed: int = 0, gz: bool = False) -> Path:
    """Write four valid IDX files of random 'digits' (blobs whose position depends on the label)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):  # small fixture: a Python loop is fine here
            r, c = 4 + 2 * (y // 5) * 5, 3 + 4 * (y % 5)
            images[i, r:r + 8, c:c + 6] = rng.integers(150, 256, (8, 6))
        for name, arr in ((f"{split}-images-idx3-ubyte", images), (f"{split}-labels-idx1-ubyte", labels)):
            data = idx.encode(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    """A folder with a tiny synthetic MNIST (256 train, 64 test)."""
    return write_mnist(tmp_path / "mnist")


def real_mnist_dir() -> Path | None:
    """The real MNIST folder: $VAELAB_DATA, or the shared copy beside the repository."""
    for cand in (os.environ.get("VAELAB_DATA"), REPO.parent / "shared" / "data" / "mnist"):
        if cand and Path(cand, "train-images-idx3-ubyte.gz").exists() or (cand and Path(cand, "train-images-idx3-ubyte").exists()):
            return Path(cand)
    return None


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST folder, or skip."""
    folder = real_mnist_dir()
    if folder is None:
        pytest.skip("real MNIST not available (set VAELAB_DATA)")
    return folder


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Never touch the user's cache; keep tests deterministic and single-threaded-friendly."""
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
