"""Make a reference folder: train a dataset's LeNet once, then save its test statistics and standard anchors.

`vaelab classifier train --dataset NAME --out src/vaelab/metrics/reference/NAME` is how the shipped
classifiers were made (the command is recorded in each lenet.json); without --out it writes one of the
user's own into the cache, usable with `--classifier PATH`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vaelab.data.images import Images, to_unit
from vaelab.errors import VaelabError
from vaelab.metrics.classifier import ReferenceClassifier, cache_folder, train_and_save
from vaelab.metrics.quality import anchors, features, gaussian_stats
from vaelab.metrics.reference import STANDARD_N, own, read_stats, write_stats


def complete(folder: Path, data: Images, device: torch.device | str = "cpu",
             log=lambda m: print(m, file=sys.stderr)) -> ReferenceClassifier:
    """Save the full test set's feature statistics and the anchors at every STANDARD_N beside the classifier."""
    clf = own(folder, device, data.dataset)
    clf.pinned = False  # anchors go into this folder, not into the user cache
    real_f, _ = features(to_unit(data.test_x), clf)  # (10000, F)
    write_stats(folder, *gaussian_stats(real_f), data.test_x)
    clf.test_stats = read_stats(folder)
    for n, n_ref in STANDARD_N:
        if n <= len(data.train_x) and n_ref <= len(data.test_x):
            anchors(data, clf, n, n_ref, log=log)
    return clf


def train_reference(data: Images, device: torch.device | str = "cpu", out: Path | None = None, force: bool = False,
                    log=lambda m: print(m, file=sys.stderr)) -> ReferenceClassifier:
    """Train (unless a valid one is there and not `force`) and complete the classifier of data's dataset in `out`."""
    ds = data.dataset
    folder = Path(out) if out is not None else cache_folder(ds)
    command = f"vaelab classifier train --dataset {ds.name}" + (f" --out {out}" if out is not None else "")
    if force or not (folder / "lenet.json").is_file():
        train_and_save(data, device, folder, log, command=command)
    else:
        try:
            own(folder, device, ds)
        except VaelabError as e:
            log(f"{e}; retraining it")
            train_and_save(data, device, folder, log, command=command)
    return complete(folder, data, device, log)
