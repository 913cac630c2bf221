"""The IDX file format (LeCun et al.) of MNIST-like datasets, read with full validation and written back.

Header: two zero bytes, an element-type code, the number of dimensions, then one big-endian
uint32 per dimension; the data follow, row-major, with nothing after them.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from vaelab.errors import DataError

UBYTE = 0x08
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes in 3 and in 1 dimension(s)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; errors name the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None


def parse(data: bytes, name: str, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse IDX bytes into a uint8 array of (n, *shape), checking every header field and the length."""
    ndim = 1 + len(shape)
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{name}: file too short ({len(data)} bytes) to hold an IDX header")
    found = int.from_bytes(data[:4], "big")
    if data[0:2] != b"\x00\x00":
        raise DataError(f"{name}: bad magic number 0x{found:08x} (expected 0x{magic:08x}); not an IDX file")
    if data[2] != UBYTE:
        raise DataError(f"{name}: element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    if data[3] != ndim:
        raise DataError(f"{name}: {data[3]} dimensions, expected {ndim} (magic 0x{magic:08x})")
    if len(data) < header_len:
        raise DataError(f"{name}: truncated header ({len(data)} of {header_len} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape:
        raise DataError(f"{name}: item shape {dims[1:]} is not {shape}")
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_images(path: Path, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Images of an IDX3 file: uint8 (n, *shape)."""
    return parse(read_bytes(path), str(path), IMAGES_MAGIC, tuple(shape))


def read_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """Labels of an IDX1 file: uint8 (n,), each checked to lie in 0 .. num_classes - 1."""
    labels = parse(read_bytes(path), str(path), LABELS_MAGIC, ())
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(f"{path}: label {labels[bad]} at index {bad} is outside 0..{num_classes - 1}")
    return labels


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (the inverse of parse)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()
