"""The pinned reference classifiers: one per dataset, shipped inside vaelab, the same bytes on every machine.

FID is a standard because everyone scores in the same Inception features against the same statistics.
vaelab's sample metrics work the same way: the LeNet of each dataset was trained once (the command is in
its lenet.json), its weights ship in reference/NAME/ with the mean and covariance of the test set's
features and the floor/ceiling anchors at the standard N, and its sha256 is pinned here, in the code, so a
changed file is refused rather than silently giving other numbers. `--classifier PATH` scores with a
classifier of one's own instead; metrics.json then says so (pinned: false) and its numbers are not
compared with pinned ones without a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaelab.data.registry import Dataset
from vaelab.data.images import Images
from vaelab.data.sources import cache_root
from vaelab.errors import VaelabError
from vaelab.metrics.classifier import ReferenceClassifier, load, load_or_train, sha256_file

SHIPPED = Path(__file__).resolve().parent / "reference"
STATS, ANCHORS = "test_stats.safetensors", "anchors.json"
# sha256 of each shipped lenet.safetensors: the pin a loaded file must match (updated only with the weights)
PINNED = {
    "mnist": "d9987e41fc3e09f2a6e80d00eeb18605ee4bf3732b36ad8b31edaef135e4b80a",
    "fashion-mnist": "f66ef9ec45e89e915b4f3387d4b9e42f782a5327c37f0cbb072437ff9a4833a5",
}
# sha256 of the statistics and anchors shipped beside them: FD-LeNet and the anchors are read from these files,
# so a changed byte would change every score silently; pinned like the weights (updated only with them)
PINNED_FILES = {
    "mnist": {"test_stats.safetensors": "62ced8a0535816798b2db36ebd3696af7cc81e0f576346f495a9639ad732dd5a",
              "anchors.json": "2a88819c492f47833f265c5cdb021a711a8306709d07f96986d47ec32779e7e2"},
    "fashion-mnist": {"test_stats.safetensors": "89acb67e452f0b426dd559007391482f557c02ce122d9be2a27cb025ad125b37",
                      "anchors.json": "b74caadb9a700b0bcc79cb1f83cb878a3f75860d1d9bb69e2f387cf98dbfbdb1"},
}
# (N generated, N reference) pairs whose anchors ship with the classifiers: the default, --quick and the protocol's
STANDARD_N = ((10000, 10000), (5000, 10000), (1000, 10000), (1000, 1000))


def shipped_folder(dataset: Dataset) -> Path:
    """Where the pinned classifier of `dataset` ships: vaelab/metrics/reference/NAME."""
    return SHIPPED / dataset.name


def has_pinned(dataset: Dataset) -> bool:
    """Whether vaelab ships a pinned classifier for `dataset`."""
    return bool(PINNED.get(dataset.name)) and (shipped_folder(dataset) / "lenet.json").is_file()


def images_digest(x_u8: torch.Tensor) -> str:
    """sha256 of a uint8 image tensor's bytes: which test set a set of statistics describes."""
    return hashlib.sha256(x_u8.contiguous().cpu().numpy().tobytes()).hexdigest()


def read_stats(folder: Path) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """(mean (F,), covariance (F, F), digest of the test images) saved in `folder`, float64; None if absent."""
    path = folder / STATS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {})["test_images_sha256"]
        t = load_file(str(path))
        mu, sigma = t["mu"].double(), t["sigma"].double()
    except Exception as e:  # a truncated or foreign file: refuse, never guess
        raise VaelabError(f"{path} is corrupt ({type(e).__name__}); reinstall vaelab or retrain the classifier") from None
    if mu.dim() != 1 or tuple(sigma.shape) != (len(mu), len(mu)):
        raise VaelabError(f"{path} holds statistics of the wrong shape {tuple(mu.shape)}, {tuple(sigma.shape)}")
    return mu, sigma, digest


def write_stats(folder: Path, mu: torch.Tensor, sigma: torch.Tensor, test_x: torch.Tensor) -> None:
    """Save the feature mean and covariance (float64) of the test images test_x beside the classifier."""
    tmp = folder / (STATS + ".next")
    save_file({"mu": mu.double().contiguous(), "sigma": sigma.double().contiguous()}, str(tmp),
              metadata={"test_images_sha256": images_digest(test_x), "images": str(len(test_x))})
    os.chmod(tmp, 0o644)  # package data: readable by every user of an installed vaelab
    tmp.replace(folder / STATS)


def pinned(dataset: Dataset, device: torch.device | str = "cpu") -> ReferenceClassifier:
    """The shipped classifier of `dataset` with its test statistics; VaelabError if its bytes are not the pinned ones."""
    folder = shipped_folder(dataset)
    try:
        clf = load(folder, device, dataset)  # checks the sidecar's sha256 and format
    except VaelabError as e:  # retraining would not repair the package's own file
        raise VaelabError(f"{str(e).split('; run `')[0]}; the package was changed: reinstall vaelab") from None
    if clf.sha256 != PINNED[dataset.name]:
        raise VaelabError(f"the shipped {dataset.title} classifier in {folder} has sha256 {clf.sha256[:12]}, not the "
                          f"pinned {PINNED[dataset.name][:12]}: the file was changed; reinstall vaelab")
    for name, digest in PINNED_FILES.get(dataset.name, {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            raise VaelabError(f"the shipped {dataset.title} {name} in {folder} is missing or not the pinned file "
                              f"(sha256 {digest[:12]}): the package was changed; reinstall vaelab")
    clf.pinned = True
    clf.test_stats = read_stats(folder)
    return clf


def own(path: Path, device: torch.device | str = "cpu", dataset: Dataset | None = None) -> ReferenceClassifier:
    """A classifier of one's own (`--classifier PATH`, a folder written by `vaelab classifier train --out`)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    clf = load(folder, device, dataset)
    clf.test_stats = read_stats(folder)
    clf.pinned = clf.sha256 == PINNED.get(clf.dataset or "", None)
    return clf


def resolve(data: Images, device: torch.device | str = "cpu", path: Path | None = None,
            log=lambda m: print(m, file=sys.stderr)) -> ReferenceClassifier:
    """The classifier that scores `data`'s images: `path` if given, else the pinned one (else one trained and cached)."""
    if path is not None:
        return own(path, device, data.dataset)
    if has_pinned(data.dataset):
        return pinned(data.dataset, device)
    log(f"vaelab ships no pinned classifier for {data.dataset.title}; using (training once) one of this machine's own")
    return load_or_train(data, device, log=log)


def anchor_files(clf: ReferenceClassifier) -> tuple[list[Path], Path | None]:
    """(files to read cached anchors from, the file new anchors go to) for `clf`."""
    if clf.folder is None:
        return [], None
    if clf.pinned:  # the package folder may be read-only: the standard N ship, others are cached per user
        extra = cache_root() / "classifier" / f"pinned-{clf.dataset}-{clf.sha256[:12]}" / ANCHORS
        return [clf.folder / ANCHORS, extra], extra
    return [clf.folder / ANCHORS], clf.folder / ANCHORS


def read_anchor_cache(path: Path) -> dict:
    """The anchors cached in `path` (key -> anchors); {} when missing or unreadable."""
    if not path.is_file():
        return {}
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return cache if isinstance(cache, dict) else {}


def check_pins() -> dict[str, str]:
    """Name -> problem for every shipped classifier whose weights differ from the pin (empty when all hold)."""
    bad = {}
    for name, digest in PINNED.items():
        w = SHIPPED / name / "lenet.safetensors"
        if not w.is_file():
            bad[name] = "missing"
        elif sha256_file(w) != digest:
            bad[name] = "sha256 differs from the pin"
        for file, want in PINNED_FILES.get(name, {}).items():
            if name not in bad and (not (SHIPPED / name / file).is_file() or sha256_file(SHIPPED / name / file) != want):
                bad[name] = f"{file} differs from its pin"
    return bad
