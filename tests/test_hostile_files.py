"""Files from elsewhere that declare huge sizes: refused from their headers, before anything large is allocated."""

import io
import resource
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from vaelab.errors import RunError, VaelabError
from vaelab.files import read_text_limited
from vaelab.metrics.score import MAX_IMAGES, read_images

pytestmark = pytest.mark.faults

HUGE = (4_000_000, 28, 28)  # 3.1 GB of uint8 once inflated


def npy_header(shape, dtype="|u1") -> bytes:
    """A valid .npy version-1.0 header declaring `shape`, without the data."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def huge_npz(path):
    """An .npz whose only member declares HUGE and holds 64 KB of zeros (deflated to almost nothing)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_header(HUGE) + bytes(65536))
    return path


def png(width, height) -> bytes:
    """A PNG that declares width x height 8-bit grey pixels and holds one compressed row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
            + chunk(b"IEND", b""))


def test_an_npz_member_declaring_millions_of_images_is_refused_from_its_header(tmp_path):
    with pytest.raises(VaelabError, match=f"declares 4,000,000 images; score at most {MAX_IMAGES:,}"):
        read_images(huge_npz(tmp_path / "bomb.npz"))


def test_an_npy_declaring_millions_of_images_or_other_shapes_is_refused(tmp_path):
    (tmp_path / "bomb.npy").write_bytes(npy_header(HUGE) + bytes(1000))
    with pytest.raises(VaelabError, match="declares 4,000,000 images"):
        read_images(tmp_path / "bomb.npy")
    (tmp_path / "wide.npy").write_bytes(npy_header((10, 100_000, 100_000)) + bytes(1000))
    with pytest.raises(VaelabError, match=r"shape \(10, 100000, 100000\): expected"):
        read_images(tmp_path / "wide.npy")


def test_the_cli_refuses_the_bomb_under_a_memory_limit_with_one_line(tmp_path):
    """Under a 3 GB address-space limit the .npz bomb used to end as 'internal error: MemoryError'."""
    bomb = huge_npz(tmp_path / "bomb.npz")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
    code = limit + "import sys; from vaelab.cli.main import main; sys.exit(main(['score', sys.argv[1]]))"
    p = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "declares 4,000,000 images" in p.stderr and "internal error" not in p.stderr


@pytest.mark.parametrize("size, message", [((30000, 30000), "declares a huge image"),
                                           ((5000, 5000), "5000x5000 pixels: expected 28x28"),
                                           ((28, 29), "28x29 pixels")])
def test_a_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path, capsys, size, message):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(*size))
    with pytest.raises(VaelabError, match=message):
        read_images(folder)
    from vaelab.cli.main import main
    assert main(["score", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err and "Warning" not in err


def test_an_oversized_json_of_a_run_is_refused_unread(tmp_path):
    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(65 << 20)  # sparse: 65 MiB declared, nothing written
    with pytest.raises(RunError, match="too large to be a vaelab file"):
        read_text_limited(big)
    from vaelab.engine.runs import read_kind
    with pytest.raises(RunError, match="too large"):
        read_kind(tmp_path)
