"""Datasets as tensors, for notebooks: `vaelab.datasets.load("mnist")`.

    >>> data = vaelab.datasets.load("fashion-mnist")
    >>> data.train_x.shape, data.train_x.dtype        # (60000, 1, 28, 28), torch.uint8
    >>> x = vaelab.datasets.as_float(data.test_x[:8])  # (8, 1, 28, 28) in [0, 1]

The files come from the read-only folder of the dataset's variable (VAELAB_DATA for MNIST), else the cache
(~/.cache/vaelab/NAME), downloaded and checksummed on first use.
"""

from __future__ import annotations

import os

import torch

from vaelab.data.registry import DATASETS, DEFAULT, Dataset, get
from vaelab.data.images import Images, to_unit
from vaelab.data.images import load as load_images


def names() -> list[str]:
    """The registered dataset names ('mnist', 'fashion-mnist')."""
    return list(DATASETS)


def describe(name: str = DEFAULT) -> Dataset:
    """A dataset's registry entry: title, class names, sources, checksums."""
    return get(name)


def load(name: str = DEFAULT, data_dir: str | os.PathLike | None = None) -> Images:
    """The dataset as uint8 tensors: .train_x (60000, 1, 28, 28), .train_y (60000,), .test_x, .test_y."""
    return load_images(name, data_dir)


def as_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 intensities in [0, 1], same shape."""
    return to_unit(x_u8)
