"""The reference classifier of a dataset: a small LeNet-style CNN, its training, saving and checked loading.

Its penultimate features play the role Inception features play for FID; its softmax gives the classifier
score and the predicted-class histogram (quality.py). vaelab ships one per dataset, trained once with a
fixed seed and pinned by sha256 (reference.py); this module also trains one of a user's own (cached as
safetensors in cache_root()/classifier/NAME, or any folder). The input normalisation (the dataset's pixel
mean and std) is stored with the weights (safetensors metadata) and in the JSON sidecar, which also records
the sha256, so every metrics.json can say which classifier its numbers came from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vaelab.data.registry import Dataset
from vaelab.data.images import Images, to_unit
from vaelab.data.sources import cache_root
from vaelab.engine.checkpoint import atomic_write_text, fsync_dir
from vaelab.errors import VaelabError

WEIGHTS, INFO = "lenet.safetensors", "lenet.json"
FORMAT = "vaelab-lenet-1"
SEED, EPOCHS, BATCH, LR = 0, 10, 128, 2e-3  # 10 epochs: trained once and shipped, so buy the accuracy
NORMALISATION = ("pixel_mean", "pixel_std")  # record keys (and metadata keys) of the input normalisation
# the safetensors metadata is ONE key holding sorted JSON: safetensors writes several keys in a random
# order, so the same weights would get another sha256 at each save
META_KEY = "vaelab"


class LeNet(nn.Module):
    """LeNet-5-like: two 5x5 conv + max-pool stages, a 128-unit feature layer, one logit per class.

    Inputs are images in [0, 1]; the net normalises them itself with (x - mean) / std, the pixel
    statistics of the dataset it was trained on (identity by default).
    """

    feature_dim = 128

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 128, classes: int = 10,
                 mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)  # 28 -> 28, pooled to 14
        self.conv2 = nn.Conv2d(c1, c2, 5)  # 14 -> 10, pooled to 5
        self.fc1 = nn.Linear(c2 * 5 * 5, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.feature_dim = hidden
        self.mean, self.std = float(mean), float(std)  # plain floats: the state_dict holds weights only

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, hidden) of images x (B, 1, 28, 28) in [0, 1]."""
        h = (x - self.mean) / self.std  # normalised inside, so every caller passes [0, 1] images
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)  # (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, c2, 5, 5)
        return F.relu(self.fc1(h.flatten(1)))  # (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, classes) of images x (B, 1, 28, 28) in [0, 1]."""
        return self.fc2(self.features(x))


@dataclass
class ReferenceClassifier:
    """A loaded classifier with its identity: sha256 of its weights file and training record."""

    net: LeNet
    sha256: str
    info: dict
    folder: Path | None  # where its files (and quality anchors) are; None: do not cache
    pinned: bool = False  # the one shipped inside vaelab (sha256 checked against the code's pin)
    # mean (F,) and covariance (F, F), float64, of the full test set's features, and the sha256 of those test
    # images (the statistics apply only to them), shipped with the pinned one
    test_stats: tuple[torch.Tensor, torch.Tensor, str] | None = field(default=None, repr=False)

    @property
    def dataset(self) -> str | None:
        """The name of the dataset it was trained on (None for one built by hand, as in tests)."""
        return self.info.get("dataset")

    def describe(self) -> dict:
        """What metrics.json records about the classifier."""
        return {"name": "LeNet (vaelab)", "dataset": self.dataset, "sha256": self.sha256, "pinned": self.pinned,
                "test_accuracy": self.info.get("test_accuracy"), "feature_dim": self.net.feature_dim}


@torch.no_grad()
def features(images: torch.Tensor, clf: ReferenceClassifier, batch: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, F) and class probabilities (N, C) of images (N, 1, 28, 28) in [0, 1]."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    device = next(clf.net.parameters()).device
    feats, probs = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device, torch.float32)
        h = clf.net.features(x)  # (B, F)
        feats.append(h.cpu())
        probs.append(torch.softmax(clf.net.fc2(h), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def cache_folder(dataset: Dataset) -> Path:
    """Where the classifier of `dataset` lives: cache_root()/classifier/NAME (honours VAELAB_CACHE)."""
    return cache_root() / "classifier" / dataset.name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def accuracy(net: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    """Top-1 accuracy of `net` on uint8 images (n, 1, 28, 28) with labels (n,)."""
    net.eval()
    device = next(net.parameters()).device
    correct = sum(int((net(to_unit(x_u8[i:i + batch].to(device))).argmax(1) == y[i:i + batch].to(device)).sum())
                  for i in range(0, len(x_u8), batch))
    return correct / len(x_u8)


def train_classifier(data: Images, device: torch.device | str = "cpu", epochs: int = EPOCHS,
                     seed: int = SEED, n_train: int | None = None, progress: bool = True,
                     width: tuple[int, int, int] = (16, 32, 128)) -> tuple[LeNet, dict]:
    """Train a LeNet on `data` with a fixed seed (Adam, one-cycle LR); return it and its record (accuracy, seconds)."""
    device = torch.device(device)
    ds = data.dataset
    torch.manual_seed(seed)
    net = LeNet(*width, classes=ds.num_classes, mean=ds.pixel_mean, std=ds.pixel_std).to(device)
    x_train = data.train_x[:n_train].to(device)  # uint8, converted per batch
    y_train = data.train_y[:n_train].to(device)
    n = len(x_train)
    steps = (n + BATCH - 1) // BATCH
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    # one-cycle: a warm start then a decay to ~0, which reaches >= 99% on MNIST in a few epochs without tuning
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=epochs * steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = tqdm(total=epochs * steps, desc=f"training the reference {ds.title} classifier", unit="batch",
               disable=None if progress else True, file=sys.stderr, leave=False)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for s in range(steps):
            idx = perm[s * BATCH:(s + 1) * BATCH]
            x = to_unit(x_train[idx])
            # random shifts of up to 2 pixels: cheap augmentation that buys the last few tenths of a percent
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    seconds = time.perf_counter() - t0
    acc = accuracy(net, data.test_x, data.test_y)
    record = {"format": FORMAT, "dataset": ds.name, "pixel_mean": ds.pixel_mean, "pixel_std": ds.pixel_std,
              "classes": ds.num_classes, "seed": seed, "epochs": epochs, "batch_size": BATCH, "lr": LR,
              "train_images": n, "width": list(width), "test_accuracy": acc, "train_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    return net.eval(), record


def save(folder: Path, net: LeNet, record: dict) -> str:
    """Write weights (with their normalisation as metadata) and sidecar atomically; return the weights' sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS + ".next")
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "width": list(record["width"]), "pixel_mean": net.mean, "pixel_std": net.std}
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # safetensors creates it private; weights that ship must be readable by every user
    digest = sha256_file(tmp)
    os.replace(tmp, folder / WEIGHTS)
    fsync_dir(folder)
    # the sidecar is written last: a weights file without a matching sidecar is retrained, never trusted
    record = {**record, "pixel_mean": net.mean, "pixel_std": net.std, "sha256": digest}
    atomic_write_text(folder / INFO, json.dumps(record, indent=2) + "\n")
    (folder / "anchors.json").unlink(missing_ok=True)  # anchors belong to the old weights
    return digest


def normalisation(weights: Path, record: dict) -> tuple[float, float]:
    """(mean, std) the classifier was trained with, from the weights' metadata; ValueError if the record disagrees."""
    with safe_open(str(weights), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[META_KEY])  # KeyError: a file saved without it is foreign
    mean, std = (float(meta[k]) for k in NORMALISATION)
    if (mean, std) != (record.get("pixel_mean"), record.get("pixel_std")):
        raise ValueError(f"normalisation {mean}/{std} of the weights differs from the record's")
    return mean, std


def load(folder: Path, device: torch.device | str = "cpu", dataset: Dataset | None = None) -> ReferenceClassifier:
    """The classifier in `folder`, checksum verified; VaelabError if missing, corrupt, foreign or not `dataset`'s."""
    w, i = folder / WEIGHTS, folder / INFO
    which = f" --dataset {dataset.name}" if dataset is not None else ""
    if not w.is_file() or not i.is_file():
        raise VaelabError(f"no reference classifier in {folder}; run `vaelab classifier train{which}`")
    try:
        record = json.loads(i.read_text(encoding="utf-8"))
        digest = sha256_file(w)
        if record.get("format") != FORMAT or record.get("sha256") != digest:
            raise ValueError("checksum or format differs from its record")
        mean, std = normalisation(w, record)
        net = LeNet(*record["width"], classes=record.get("classes", 10), mean=mean, std=std)
        net.load_state_dict(load_file(str(w)))
    except Exception as e:  # corrupt JSON, truncated weights, foreign file: all mean "retrain"
        raise VaelabError(f"the reference classifier in {folder} is corrupt ({type(e).__name__}: "
                          f"{str(e)[:120]}); run `vaelab classifier train --force{which}`") from None
    if dataset is not None and record.get("dataset") != dataset.name:
        raise VaelabError(f"the classifier in {folder} was trained on {record.get('dataset')}, not {dataset.name}; "
                          f"run `vaelab classifier train --force{which}`")
    return ReferenceClassifier(net.to(device).eval(), digest, record, folder)


def train_and_save(data: Images, device: torch.device | str = "cpu", folder: Path | None = None,
                   log=lambda m: print(m, file=sys.stderr), command: str | None = None) -> ReferenceClassifier:
    """Train the reference classifier of data's dataset, refuse it below the dataset's bar, cache and return it."""
    ds = data.dataset
    folder = folder or cache_folder(ds)
    log(f"training a {ds.title} classifier (LeNet, seed {SEED}, {EPOCHS} epochs) into {folder}")
    net, record = train_classifier(data, device)
    record["command"] = command or f"vaelab classifier train --dataset {ds.name} --out FOLDER"
    if record["test_accuracy"] < ds.classifier_bar:
        raise VaelabError(f"the reference {ds.title} classifier reached only {record['test_accuracy']:.2%} test "
                          f"accuracy (< {ds.classifier_bar:.0%}) in {record['train_seconds']:.0f} s; not cached")
    digest = save(folder, net, record)
    log(f"reference {ds.title} classifier: test accuracy {record['test_accuracy']:.2%} in "
        f"{record['train_seconds']:.0f} s, sha256 {digest[:12]}")
    return ReferenceClassifier(net.to(device).eval(), digest, {**record, "sha256": digest}, folder)


def load_or_train(data: Images, device: torch.device | str = "cpu", folder: Path | None = None,
                  force: bool = False, log=lambda m: print(m, file=sys.stderr)) -> ReferenceClassifier:
    """The cached classifier of data's dataset, trained first if missing, corrupt or `force`d (evaluate's first run)."""
    folder = folder or cache_folder(data.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    # a lock, so that two evaluations started together train it once (the second waits, then loads)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (folder / WEIGHTS).is_file() and (folder / INFO).is_file():
            try:
                return load(folder, device, data.dataset)
            except VaelabError as e:
                log(f"{e}; retraining it")
        return train_and_save(data, device, folder, log)
