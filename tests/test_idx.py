"""IDX reading: round trips, and one clear DataError for each kind of corrupt file."""

import gzip

import numpy as np
import pytest

from vaelab.data import images as data
from vaelab.data import idx
from vaelab.errors import DataError


def test_roundtrip_images_and_labels(tmp_path):
    imgs = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(idx.encode(imgs))
    assert np.array_equal(idx.read_images(p), imgs)
    header = p.read_bytes()[:16]
    assert header == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28])  # magic 0x803, 3 x 28 x 28
    lp = tmp_path / "y-labels-idx1-ubyte.gz"
    lp.write_bytes(gzip.compress(idx.encode(np.array([0, 9, 5], np.uint8))))
    assert idx.read_labels(lp).tolist() == [0, 9, 5]


def images_bytes(n=2):
    return idx.encode(np.zeros((n, 28, 28), np.uint8))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"", "too short"),
    (lambda b: b[:10], "truncated header"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\x01\x02" + b[2:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
    (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
    (lambda b: b[:8] + (27).to_bytes(4, "big") + b[12:], "item shape"),
])
def test_corrupt_image_files_name_the_file_and_problem(tmp_path, mutate, message):
    p = tmp_path / "bad-images-idx3-ubyte"
    p.write_bytes(mutate(images_bytes()))
    with pytest.raises(DataError, match=message) as e:
        idx.read_images(p)
    assert str(p) in str(e.value)


def test_labels_out_of_range(tmp_path):
    p = tmp_path / "l-labels-idx1-ubyte"
    p.write_bytes(idx.encode(np.array([1, 2, 10], np.uint8)))
    with pytest.raises(DataError, match="label 10 at index 2"):
        idx.read_labels(p)


def test_not_gzip(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="not a valid gzip"):
        idx.read_images(p)


def test_count_mismatch_and_missing_files(tiny_mnist):
    (tiny_mnist / "t10k-labels-idx1-ubyte").write_bytes(idx.encode(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="5 labels for 64 images"):
        data.load("mnist", tiny_mnist)
    (tiny_mnist / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels"):
        data.load("mnist", tiny_mnist)


def test_load_tiny_as_uint8_tensors(tiny_mnist):
    m = data.load("mnist", tiny_mnist)
    assert m.train_x.shape == (256, 1, 28, 28) and m.train_x.dtype.is_floating_point is False
    assert m.test_y.shape == (64,) and int(m.test_y.max()) <= 9
    assert m.source == tiny_mnist


def test_real_mnist_verifies(real_mnist):
    rows = data.info("mnist", real_mnist)
    assert all(r["verified"] for r in rows), rows
    m = data.load("mnist", real_mnist)
    assert m.train_x.shape == (60000, 1, 28, 28) and m.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(m.test_y.numpy()).tolist()[:2] == [980, 1135]  # the known test-set class counts


def test_missing_explicit_folder_is_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", tmp_path / "nowhere")
