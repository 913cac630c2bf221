"""Datasets: the registry (datasets.py), where files come from (sources.py), IDX parsing, tensors in memory."""

from vaelab.data.datasets import DATASETS, Dataset, get
from vaelab.data.images import Images, load, to_unit

__all__ = ["DATASETS", "Dataset", "Images", "get", "load", "to_unit"]
