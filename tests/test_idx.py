"""IDX reading: round trips, one clear DataError for each kind of corrupt file, gzip bombs and fuzzing."""

import gzip
import hashlib
import math
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.data import images as data
from vaelab.data import idx, sources
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



def xor_columns(columns: list[int], bits: int) -> int:
    """The GF(2) matrix with these 32 columns times the vector `bits`."""
    out = 0
    for i, column in enumerate(columns):
        if bits >> i & 1:
            out ^= column
    return out


def crc32_zeros(crc: int, n: int) -> int:
    """zlib.crc32(bytes(n), crc) without the n bytes: appending a zero byte is an affine map over GF(2)."""
    const = zlib.crc32(b"\0", 0)
    columns = [zlib.crc32(b"\0", 1 << i) ^ const for i in range(32)]
    while n:
        if n & 1:
            crc = const ^ xor_columns(columns, crc)
        columns, const = [xor_columns(columns, c) for c in columns], const ^ xor_columns(columns, const)
        n >>= 1
    return crc


def gzip_bomb(head: bytes, zeros: int, chunk: int = 1 << 24) -> bytes:
    """A valid gzip file of head + `zeros` zero bytes, built without making them: one deflated chunk, repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)  # a full flush forgets the history,
    block = deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH)  # so every chunk deflates alike
    n, rest = divmod(zeros, chunk)
    end = deflate.compress(bytes(rest)) + deflate.flush()
    trailer = struct.pack("<II", crc32_zeros(zlib.crc32(head), zeros), (len(head) + zeros) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + start + block * n + end + trailer


def header(*dims: int) -> bytes:
    """An IDX header of unsigned bytes with these dimension sizes."""
    return bytes([0, 0, idx.UBYTE, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def bounded(fn, *args):
    """Call fn(*args), expecting a DataError: (its message, seconds taken, peak Python memory in bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError) as e:
            fn(*args)
        return str(e.value), time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("zeros", [0, 1, 999, 1000, 3001])
def test_gzip_bomb_builder_makes_valid_gzip(zeros):
    assert crc32_zeros(zlib.crc32(b"ab"), zeros) == zlib.crc32(bytes(zeros), zlib.crc32(b"ab"))
    assert gzip.decompress(gzip_bomb(b"head", zeros, chunk=1000)) == b"head" + bytes(zeros)


def assert_bombs_refused(read, path, head: bytes, expected: int, peak_limit: int):
    """2 GiB, then 20 GiB (only once 2 GiB was refused cheaply): each read no further than the `expected` bytes."""
    for gib in (2, 20):
        path.write_bytes(gzip_bomb(head, (gib << 30) - len(head)))
        assert path.stat().st_size < (gib << 30) // 500  # about 1 KB per MB of zeros
        message, seconds, peak = bounded(read, path)
        assert f"has trailing bytes: more than {expected} bytes, header says {expected}" in message, message
        assert str(path) in message and seconds < 5 and peak < peak_limit, (gib, seconds, peak)


@pytest.mark.parametrize("read", [idx.read_images, sources.md5_of])
def test_an_images_bomb_is_refused_in_the_time_and_memory_of_the_honest_file(tmp_path, read):
    assert_bombs_refused(read, tmp_path / "t10k-images-idx3-ubyte.gz", header(10000, 28, 28), 7840016, 64 << 20)


@pytest.mark.parametrize("read", [idx.read_labels, sources.md5_of])
def test_a_labels_bomb_is_refused_by_the_reader_and_the_md5(tmp_path, read):
    assert_bombs_refused(read, tmp_path / "t10k-labels-idx1-ubyte.gz", header(64) + bytes(64), 72, 16 << 20)


@pytest.mark.parametrize("gz", [False, True])
def test_a_huge_header_with_little_data_is_truncated_without_allocating(tmp_path, gz):
    blob = header(4_000_000_000, 28, 28) + bytes(1000)  # claims 3.1 TB
    p = tmp_path / ("x-images-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(blob) if gz else blob)
    for read in (idx.read_images, sources.md5_of):
        message, seconds, peak = bounded(read, p)
        assert "truncated: 1016 bytes, header says 3136000000016" in message and peak < 16 << 20, (message, peak)
    with pytest.raises(DataError, match="truncated: 1016 bytes"):
        idx.parse(blob, "x", idx.IMAGES_MAGIC, (28, 28))


def test_a_huge_header_on_a_bomb_is_refused_after_the_cap(tmp_path):
    """A header claiming 3.1 TB on 2 GiB, then 20 GiB: both inflate only the 256 MiB cap, in the same time."""
    p = tmp_path / "x-images-idx3-ubyte.gz"
    times = []
    for gib in (2, 20):
        p.write_bytes(gzip_bomb(header(4_000_000_000, 28, 28), gib << 30))
        message, seconds, peak = bounded(idx.read_images, p)
        assert f"more than the {idx.MAX_BYTES} an IDX file may hold" in message and peak < 16 << 20, (message, peak)
        times.append(seconds)
    assert times[1] < 2 * times[0] + 1, times


def test_a_corrupt_gzip_trailer_is_still_caught(tmp_path):
    blob = bytearray(gzip.compress(idx.encode(np.zeros((2, 28, 28), np.uint8))))
    blob[-8] ^= 1  # the CRC: seen only if the reader reaches the end of the stream
    p = tmp_path / "x-images-idx3-ubyte.gz"
    p.write_bytes(bytes(blob))
    for read in (idx.read_images, sources.md5_of):
        with pytest.raises(DataError, match="not a valid gzip file"):
            read(p)


def test_md5_is_of_the_whole_uncompressed_file(tmp_path):
    blob = idx.encode(np.arange(3 * 28 * 28).reshape(3, 28, 28).astype(np.uint8))
    (tmp_path / "a").write_bytes(blob)
    (tmp_path / "a.gz").write_bytes(gzip.compress(blob))
    assert sources.md5_of(tmp_path / "a") == sources.md5_of(tmp_path / "a.gz") == hashlib.md5(blob).hexdigest()


SIZES = st.one_of(st.integers(0, 4), st.just(28), st.integers(0, 2**32 - 1))


def mostly(value, other: st.SearchStrategy) -> st.SearchStrategy:
    """`value` three times in four, else a draw from `other`."""
    return st.one_of(st.just(value), st.just(value), st.just(value), other)


@st.composite
def idx_files(draw) -> tuple[bytes, int]:
    """(IDX-like bytes, zero bytes to append): random magic, element type, dimensions, payload length, cut."""
    magic = draw(mostly(b"\0\0", st.binary(min_size=2, max_size=2)))
    element = draw(mostly(idx.UBYTE, st.integers(0, 255)))
    dims = draw(st.one_of(SIZES.map(lambda n: [n, 28, 28]), SIZES.map(lambda n: [n]), st.lists(SIZES, max_size=5)))
    ndim = draw(mostly(len(dims), st.integers(0, 255)))
    head = magic + bytes([element, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    declared = math.prod(dims)
    exact = declared if declared <= 1 << 20 else 0
    length = draw(mostly(exact, st.one_of(st.integers(max(0, exact - 2), exact + 2), st.integers(0, 3000))))
    fill = draw(st.one_of(st.integers(0, 9), st.integers(0, 255)))
    cut = draw(mostly(None, st.integers(0, len(head) + length)))
    extra = draw(mostly(0, st.sampled_from([1, 5, 1 << 24])))
    return (head + bytes([fill]) * length)[:cut], extra


def gzip_cut(data: bytes, cut: int | None) -> bytes:
    """A gzip of `data` (a bomb-built one, as any valid gzip), its compressed bytes cut at `cut` if given."""
    return gzip_bomb(data, 0)[:cut]


def most_read(data: bytes) -> int:
    """The most bytes a bounded reader may keep of `data`: what its IDX header declares + 1, else the header."""
    if len(data) < 4 or data[:3] != b"\0\0\x08" or len(data) < 4 + 4 * data[3]:
        return 4 + 4 * 255
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return min(len(data), 4 + 4 * len(dims) + math.prod(dims) + 1)


def check_read(read, path, blob: bytes, shape: tuple[int, ...]):
    """read(path) is a DataError or exactly the array that blob encodes, of the shape it declares."""
    try:
        array = read(path)
    except DataError:
        return
    assert array.dtype == np.uint8 and array.shape[1:] == shape and idx.encode(array) == blob


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=idx_files(), gz=st.booleans(), gz_cut=mostly(None, st.integers(0, 40)))
def test_fuzz_reader_gives_an_array_or_a_data_error(tmp_path, case, gz, gz_cut):
    """Every file is an array of its declared shape or one DataError: no other exception, no large allocation."""
    blob, extra = case
    whole = blob + bytes(extra if gz else min(extra, 5))  # a 16 MiB extension only where gzip keeps it small
    p = tmp_path / ("f-idx-ubyte.gz" if gz else "f-idx-ubyte")
    p.write_bytes(gzip_cut(whole, None if gz_cut is None else -gz_cut - 1) if gz else whole)
    tracemalloc.start()
    try:
        for read, shape in ((idx.read_images, (28, 28)), (idx.read_labels, ())):
            check_read(read, p, whole, shape)
        try:
            assert sources.md5_of(p) == hashlib.md5(whole).hexdigest() or not whole.startswith(b"\0\0\x08")
        except DataError:
            pass
        assert tracemalloc.get_traced_memory()[1] < 2 * most_read(whole) + (4 << 20)  # not past the header
    finally:
        tracemalloc.stop()


@settings(max_examples=300, deadline=1000)
@given(case=idx_files())
def test_fuzz_parse_gives_an_array_or_a_data_error(case):
    blob = case[0] + bytes(min(case[1], 5))
    for magic, shape in ((idx.IMAGES_MAGIC, (28, 28)), (idx.LABELS_MAGIC, ())):
        try:
            array = idx.parse(blob, "fuzz", magic, shape)
        except DataError:
            continue
        assert array.shape[1:] == shape and idx.encode(array) == blob
