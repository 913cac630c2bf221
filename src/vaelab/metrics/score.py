"""Score any generator's images (not only vaelab runs) with the pinned reference classifier: `vaelab score PATH`.

Input: a .npy or .npz array of shape (N, 28, 28) or (N, 1, 28, 28), uint8 (0..255) or float in [0, 1], or a
folder of 28x28 grayscale PNGs. Anything else is refused with a message that says what was found.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaelab.data.images import Images
from vaelab.errors import VaelabError
from vaelab.metrics import quality
from vaelab.metrics.classifier import ReferenceClassifier
from vaelab.metrics.reference import resolve

MIN_IMAGES = 500  # below this FD-LeNet's bias in N dwarfs the differences between models (protocol: N = 10,000)
PROTOCOL_N = 10000
MAX_FILES = 200_000  # a folder bigger than this is not a sample set


def to_images(a: np.ndarray, what: str) -> torch.Tensor:
    """An array (N, 28, 28) or (N, 1, 28, 28), uint8 or float in [0, 1] -> float32 tensor (N, 1, 28, 28)."""
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1:] != (1, 28, 28):
        raise VaelabError(f"{what} has shape {a.shape}: expected (N, 28, 28) or (N, 1, 28, 28) images of 28x28 pixels")
    if a.dtype == np.uint8:
        return torch.from_numpy(a.astype(np.float32) / 255.0)
    if a.dtype.kind not in "fiub":
        raise VaelabError(f"{what} holds {a.dtype} values: expected uint8 or floating-point pixels")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(x).all():
        raise VaelabError(f"{what} contains NaN or infinite pixels")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        hint = " (a DDPM's [-1, 1] output: save (x + 1) / 2)" if lo >= -1 and hi <= 1 else ""
        hint = hint or (" (0..255 values: save them as uint8)" if hi <= 255 and lo >= 0 else "")
        raise VaelabError(f"{what} has pixels in [{lo:.3g}, {hi:.3g}]: expected intensities in [0, 1]{hint}")
    return x


def read_array(path: Path, key: str | None) -> np.ndarray:
    """The image array of a .npy, or of a .npz (its only array, or `key`); never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise VaelabError(f"{path} is not a readable NumPy file ({str(e)[:100]})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key is None and len(names) != 1:
            raise VaelabError(f"{path} holds {len(names)} arrays ({', '.join(names[:8])}): name one with --key")
        key = key or names[0]
        if key not in names:
            raise VaelabError(f"{path} has no array {key!r}; it has {', '.join(names[:8])}")
        try:
            return loaded[key]
        except ValueError as e:  # an object array would need unpickling
            raise VaelabError(f"{path}[{key}] is not a plain numeric array ({str(e)[:80]})") from None


def sixteen_bit(im: Image.Image, f: Path) -> np.ndarray:
    """A 16-bit grayscale PNG as uint8, scaled (0..65535 -> 0..255), not clipped as Pillow's convert("L") does."""
    a = np.asarray(im, dtype=np.int64)
    if a.min() < 0 or a.max() > 65535:
        raise VaelabError(f"{f} holds pixel values outside 0..65535: not a 16-bit grayscale image")
    return np.rint(a / 257).astype(np.uint8)


def read_pngs(folder: Path) -> np.ndarray:
    """The .png files of `folder` (sorted by name) as uint8 (N, 28, 28); colour refused unless gray."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise VaelabError(f"{folder} holds no .png file")
    if len(files) > MAX_FILES:
        raise VaelabError(f"{folder} holds {len(files):,} PNGs; score at most {MAX_FILES:,} at once")
    out = np.empty((len(files), 28, 28), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                a = sixteen_bit(im, f) if im.mode in ("I;16", "I;16B", "I") else np.asarray(
                    im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
        except (UnidentifiedImageError, OSError) as e:
            raise VaelabError(f"{f} is not a readable PNG ({str(e)[:80]})") from None
        if a.ndim == 3:  # colour: accepted only when the three channels are equal (a gray image saved as RGB)
            if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
                raise VaelabError(f"{f} is a colour image: expected grayscale digits")
            a = a[..., 0]
        if a.shape != (28, 28):
            raise VaelabError(f"{f} is {a.shape[1]}x{a.shape[0]} pixels: expected 28x28")
        out[i] = a
    return out


def read_images(path, key: str | None = None) -> torch.Tensor:
    """Images (N, 1, 28, 28) in [0, 1] from a .npy/.npz file or a folder of PNGs; VaelabError otherwise."""
    path = Path(path)
    if path.is_dir():
        return to_images(read_pngs(path), str(path))
    if not path.is_file():
        raise VaelabError(f"{path} does not exist")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise VaelabError(f"{path}: expected a .npy or .npz array or a folder of PNGs")
    return to_images(read_array(path, key), str(path))


def score_images(images: torch.Tensor, data: Images, device: torch.device | str = "cpu", n_ref: int = 10000,
                 clf: ReferenceClassifier | None = None, resamples: int = 200, seed: int = 0,
                 min_images: int = MIN_IMAGES, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Sample quality of images (N, 1, 28, 28) in [0, 1] against `data`'s test set, with intervals and anchors."""
    if len(images) < min_images:
        raise VaelabError(f"{len(images)} images are too few: FD-LeNet is biased upward at small N and its "
                          f"interval is wide; score at least {min_images} (the protocol: N = {PROTOCOL_N:,})")
    clf = clf or resolve(data, device, log=log)
    out = quality.sample_quality(images, data, device, n_ref, clf=clf, resamples=resamples, seed=seed)
    if len(images) != PROTOCOL_N:
        out["note"] = (f"N = {len(images):,}: FD-LeNet depends on N; compare only with numbers at the same N "
                       f"(the protocol's is {PROTOCOL_N:,})")
    return out
