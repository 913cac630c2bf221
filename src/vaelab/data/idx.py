"""The IDX file format (LeCun et al.) of MNIST-like datasets, read with full validation and written back.

Header: two zero bytes, an element-type code, the number of dimensions, then one big-endian
uint32 per dimension; the data follow, row-major, with nothing after them. A file is read as a
stream and never further than its header declares (+1 byte, to see trailing data), so a gzip
bomb costs no more time or memory than the honest file it pretends to be.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaelab.errors import DataError

UBYTE = 0x08
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes in 3 and in 1 dimension(s)
CHUNK = 1 << 20  # bytes read (after gunzip) at a time
MAX_BYTES = 1 << 28  # the most an IDX file may hold: 256 MiB (MNIST's largest file has 47 MB)


def open_stream(path: Path) -> BinaryIO:
    """The file opened for reading, gunzipped as it is read when it ends in .gz; errors name the file."""
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def read_chunk(stream: BinaryIO, n: int, path: Path) -> bytes:
    """Up to n bytes of `stream` (b"" at its end); a bad gzip stream or an I/O error is a DataError."""
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error) as e:
        if path.suffix == ".gz":
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def read_upto(stream: BinaryIO, n: int, path: Path, start: bytes = b"") -> bytes:
    """`start` (read before) and the next bytes of `stream`, n in all at most; read a chunk at a time, no copy."""
    kept = io.BytesIO()
    kept.write(start)
    while kept.tell() < n and (chunk := read_chunk(stream, min(CHUNK, n - kept.tell()), path)):
        kept.write(chunk)
    return kept.getvalue()


def count_upto(stream: BinaryIO, n: int, path: Path) -> int:
    """How many of the next n bytes `stream` has, read a chunk at a time and not kept."""
    count = 0
    while count < n and (chunk := read_chunk(stream, min(CHUNK, n - count), path)):
        count += len(chunk)
    return count


def file_length(dims: tuple[int, ...]) -> int:
    """Bytes of an IDX file of unsigned bytes with these dimension sizes: header and data."""
    return 4 + 4 * len(dims) + math.prod(dims)


def header_dims(data: bytes) -> tuple[int, ...]:
    """The dimension sizes in the header at the start of `data` (complete up to them; checked by the caller)."""
    return tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3]))


def is_head(head: bytes) -> bool:
    """Whether `head` starts an IDX header of unsigned bytes and holds all its dimension sizes."""
    return len(head) >= 4 and head[:3] == bytes([0, 0, UBYTE]) and len(head) >= 4 + 4 * head[3]


def check_header(data: bytes, name: str, magic: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions in the IDX header at the start of `data`, checked against magic and item shape."""
    ndim = 1 + len(shape)
    if len(data) < 4:
        raise DataError(f"{name}: file too short ({len(data)} bytes) to hold an IDX header")
    found = int.from_bytes(data[:4], "big")
    if data[0:2] != b"\x00\x00":
        raise DataError(f"{name}: bad magic number 0x{found:08x} (expected 0x{magic:08x}); not an IDX file")
    if data[2] != UBYTE:
        raise DataError(f"{name}: element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    if data[3] != ndim:
        raise DataError(f"{name}: {data[3]} dimensions, expected {ndim} (magic 0x{magic:08x})")
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated header ({len(data)} of {4 + 4 * ndim} bytes)")
    dims = header_dims(data)
    if dims[1:] != shape:
        raise DataError(f"{name}: item shape {dims[1:]} is not {shape}")
    return dims


def read_head(stream: BinaryIO, path: Path) -> bytes:
    """The header at the start of `stream`: 4 bytes, then the dimension sizes where those begin an IDX header."""
    head = read_upto(stream, 4, path)
    if len(head) == 4 and head[:3] == bytes([0, 0, UBYTE]):
        head = read_upto(stream, 4 + 4 * head[3], path, head)
    return head


def read_rest(stream: BinaryIO, head: bytes, expected: int, path: Path) -> bytes:
    """`head` and what follows it, `expected` bytes in all at most; DataError if more follow or it is too large."""
    if expected > MAX_BYTES:  # counted, not kept: a truncated file is told apart from one too large
        found = len(head) + count_upto(stream, MAX_BYTES + 1 - len(head), path)
        if found <= MAX_BYTES:
            raise DataError(f"{path}: truncated: {found} bytes, header says {expected}")
        raise DataError(f"{path}: header says {expected} bytes, more than the {MAX_BYTES} an IDX file may hold")
    data = read_upto(stream, expected + 1, path, head)
    if len(data) > expected:
        raise DataError(f"{path}: has trailing bytes: more than {expected} bytes, header says {expected}")
    return data


def read_bytes(path: Path, magic: int | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """The file's bytes (gunzipped if .gz) up to the length its IDX header declares; the header only if not IDX."""
    with open_stream(path) as stream:
        head = read_head(stream, path)
        if len(head) < 4:  # an empty or cut gzip stream inflates to nothing: no IDX file either way
            raise DataError(f"{path}: file too short ({len(head)} bytes) to hold an IDX header")
        if magic is not None:
            return read_rest(stream, head, file_length(check_header(head, str(path), magic, shape)), path)
        return read_rest(stream, head, file_length(header_dims(head)), path) if is_head(head) else head


def parse(data: bytes, name: str, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse IDX bytes into a uint8 array of (n, *shape), checking every header field and the length."""
    dims = check_header(data, name, magic, shape)
    expected = file_length(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def read_images(path: Path, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Images of an IDX3 file: uint8 (n, *shape)."""
    return parse(read_bytes(path, IMAGES_MAGIC, tuple(shape)), str(path), IMAGES_MAGIC, tuple(shape))


def read_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """Labels of an IDX1 file: uint8 (n,), each checked to lie in 0 .. num_classes - 1."""
    labels = parse(read_bytes(path, LABELS_MAGIC, ()), str(path), LABELS_MAGIC, ())
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(f"{path}: label {labels[bad]} at index {bad} is outside 0..{num_classes - 1}")
    return labels


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (the inverse of parse)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()
