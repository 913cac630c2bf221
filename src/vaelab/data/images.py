"""A dataset in memory: find its four IDX files (data/sources.py), validate them, hold them as uint8 tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from vaelab.data import idx, sources
from vaelab.data.registry import DEFAULT, Dataset, get
from vaelab.errors import DataError


@dataclass
class Images:
    """The four arrays of a dataset as uint8 tensors: images (n, 1, H, W), labels (n,), and where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: Path
    dataset: Dataset

    def to(self, device: torch.device | str) -> "Images":
        """A copy on `device`, still uint8 (a quarter of float32's memory; converted per batch)."""
        return Images(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
                      source=self.source, dataset=self.dataset)


def read_pair(folder: Path, split: str, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split ('train' or 't10k'), checked to have the same length."""
    images = idx.read_images(sources.find_file(folder, f"{split}-images-idx3-ubyte"), dataset.image_shape)
    labels_path = sources.find_file(folder, f"{split}-labels-idx1-ubyte")
    labels = idx.read_labels(labels_path, dataset.num_classes)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return images, labels


def load(name: str = DEFAULT, data_dir: str | os.PathLike | None = None) -> Images:
    """Load (fetching if needed) and validate the dataset `name`; every problem is one DataError."""
    dataset = get(name)
    folder = sources.locate(dataset, data_dir)
    (trx, try_), (tex, tey) = read_pair(folder, "train", dataset), read_pair(folder, "t10k", dataset)
    as_tensor = lambda a: torch.from_numpy(a.copy())  # noqa: E731  (frombuffer arrays are read-only)
    return Images(as_tensor(trx).unsqueeze(1), as_tensor(try_).long(),
                  as_tensor(tex).unsqueeze(1), as_tensor(tey).long(), source=folder, dataset=dataset)


def info(name: str = DEFAULT, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Per-file report (path, bytes, md5 verified, shape or error) for `vaelab data info`."""
    dataset = get(name)
    folder = sources.explicit_dir(dataset, data_dir) or sources.cache_dir(dataset)
    rows = []
    for file_name, md5 in dataset.files.items():
        path = sources.find_file(folder, file_name) if folder.is_dir() else None
        row = {"file": file_name, "path": str(path) if path else None, "verified": False, "detail": "missing"}
        if path:
            try:
                n = (idx.read_images(path, dataset.image_shape) if "images" in file_name
                     else idx.read_labels(path, dataset.num_classes)).shape[0]
                ok = sources.md5_of(path) == md5
                row.update(verified=ok, detail=f"{n} items" + ("" if ok else ", md5 differs from the official file"))
            except DataError as e:
                row["detail"] = str(e)
        rows.append(row)
    return rows


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 intensities in [0, 1] (as torchvision's ToTensor, which the report uses)."""
    return x_uint8.float().div_(255.0)


def to_signed(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1], the DDPM's data range."""
    return to_unit(x_u8).mul_(2).sub_(1)


Loader = Callable[[str], Images]  # dataset name -> its images
Data = Union[Images, Loader, None]  # what callers hand over: the images, a loader, or nothing (the default loader)


def images_for(name: str, data: Data = None, data_dir=None) -> Images:
    """Dataset `name`'s images: `data` (Images or a loader) or load(name, data_dir); DataError for another dataset."""
    if data is None:
        found = load(name, data_dir)
    elif isinstance(data, Images):
        found = data
    else:
        found = data(name)
    if found.dataset.name != name:
        raise DataError(f"the run was trained on {name}, but the images given are {found.dataset.title}")
    return found
