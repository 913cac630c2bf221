"""Score any generator's images (not only vaelab runs) with the pinned reference classifier: `vaelab score PATH`.

Input: a .npy or .npz array of shape (N, 28, 28) or (N, 1, 28, 28), uint8 (0..255) or float in [0, 1], or a
folder of 28x28 grayscale PNGs. Anything else is refused with a message that says what was found.
"""

from __future__ import annotations

import sys
import warnings
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
MAX_FILES = MAX_IMAGES = 200_000  # more images than this (files or array rows) is not a sample set


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


def check_declared(header, what: str) -> None:
    """Refuse an array from its .npy header (magic and header read from the open file `header`), before
    anything is allocated: not images of 28x28 pixels, an object dtype, or more than MAX_IMAGES of them."""
    try:
        version = np.lib.format.read_magic(header)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(header)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise VaelabError(f"{what} is not a readable NumPy array ({str(e)[:100]})") from None
    if dtype.hasobject:
        raise VaelabError(f"{what} holds Python objects ({dtype}): expected uint8 or floating-point pixels")
    if len(shape) not in (3, 4) or tuple(shape[1:]) not in ((28, 28), (1, 28, 28)):
        raise VaelabError(f"{what} has shape {tuple(shape)}: expected (N, 28, 28) or (N, 1, 28, 28) images "
                          "of 28x28 pixels")
    if shape[0] > MAX_IMAGES:
        raise VaelabError(f"{what} declares {shape[0]:,} images; score at most {MAX_IMAGES:,} at once")


def check_file(path: Path, key: str | None) -> None:
    """check_declared on the .npy file, or on the member of the .npz that read_array will load."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                return check_declared(f, str(path))
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith(".npy")]
            wanted = [n for n in members if key is None or n == key + ".npy"]
            if len(wanted) == 1:  # else read_array explains what is missing
                with z.open(wanted[0]) as f:
                    check_declared(f, f"{path}[{wanted[0][:-4]}]")
    except (OSError, zipfile.BadZipFile, NotImplementedError) as e:  # NotImplementedError: an unknown compression
        raise VaelabError(f"{path} is not a readable NumPy file ({str(e)[:100]})") from None


def read_array(path: Path, key: str | None) -> np.ndarray:
    """The image array of a .npy, or of a .npz (its only array, or `key`); never unpickles, and checks the
    declared shape before reading (a hostile header cannot make it allocate gigabytes)."""
    check_file(path, key)
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
        raise VaelabError(f"{folder} holds {len(files):,} PNGs; score at most {MAX_IMAGES:,} at once")
    out = np.empty((len(files), 28, 28), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = read_png(f)
    return out


def read_png(f: Path) -> np.ndarray:
    """One 28x28 grayscale PNG as uint8 (28, 28); its declared size is checked before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, not warned about
            with Image.open(f) as im:
                if im.size != (28, 28):
                    raise VaelabError(f"{f} is {im.size[0]}x{im.size[1]} pixels: expected 28x28")
                a = sixteen_bit(im, f) if im.mode in ("I;16", "I;16B", "I") else np.asarray(
                    im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
    except Image.DecompressionBombError as e:  # Pillow's own refusal of a huge declared size, at open
        raise VaelabError(f"{f} declares a huge image ({str(e)[:80]}): expected 28x28 pixels") from None
    except (UnidentifiedImageError, OSError) as e:
        raise VaelabError(f"{f} is not a readable PNG ({str(e)[:80]})") from None
    if a.ndim == 3:  # colour: accepted only when the three channels are equal (a gray image saved as RGB)
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise VaelabError(f"{f} is a colour image: expected grayscale digits")
        a = a[..., 0]
    if a.shape != (28, 28):
        raise VaelabError(f"{f} is {a.shape[1]}x{a.shape[0]} pixels: expected 28x28")
    return a


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
