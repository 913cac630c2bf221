"""Reading data files out of a Debian package in pure Python: synthetic .deb files, no network (bar one slow test)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vaelab.data import debian, idx, sources
from vaelab.data.registry import FASHION_MNIST
from vaelab.errors import DataError

PREFIX = "./usr/share/datasets/fake/"
IMAGES = idx.encode(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
LABELS = idx.encode(np.array([3, 7], np.uint8))
RAW = {"images": IMAGES, "labels": LABELS}
MEMBERS = {"images": PREFIX + "images-idx3-ubyte.gz", "labels": PREFIX + "labels-idx1-ubyte.gz"}


def tar_bytes(files: dict[str, bytes], mode: str = "w:xz", links: dict[str, str] | None = None) -> bytes:
    """A tar (compressed per `mode`) with directory entries, the given regular files and symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for d in ("./", "./usr/", "./usr/share/"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


CONTROL = tar_bytes({"./control": b"Package: fake\nVersion: 1\nArchitecture: all\n"}, "w:xz")


def ar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """An `ar` archive as dpkg-deb writes it: global header, 60-byte headers, odd members padded with \\n."""
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii"))
        out.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def make_deb(files: dict[str, bytes] | None = None, data_name: str = "data.tar.xz", data: bytes | None = None,
             links: dict[str, str] | None = None, binary: bytes = b"2.0\n") -> bytes:
    """A small .deb: debian-binary, control.tar.xz, and data.tar.* holding gzipped fake IDX files."""
    if files is None:
        files = {MEMBERS[k]: gzip.compress(v) for k, v in RAW.items()}
    mode = {"data.tar.xz": "w:xz", "data.tar.gz": "w:gz", "data.tar.bz2": "w:bz2", "data.tar": "w"}.get(data_name, "w")
    if data is None:
        data = tar_bytes(files, mode, links)
    return ar_bytes([("debian-binary", binary), ("control.tar.xz", CONTROL), (data_name, data)])


def write(tmp_path: Path, blob: bytes, name: str = "fake_1_all.deb") -> tuple[Path, str]:
    """Write the .deb and return (path, its sha256)."""
    path = tmp_path / name
    path.unlink(missing_ok=True)  # a fresh file: rewriting in place makes ext4 flush on every call
    path.write_bytes(blob)
    return path, hashlib.sha256(blob).hexdigest()


def test_happy_path_returns_gunzipped_members(tmp_path):
    deb, sha = write(tmp_path, make_deb())
    assert debian.read_deb(deb, sha, MEMBERS) == RAW
    assert debian.read_deb(deb, sha.upper(), {"labels": MEMBERS["labels"]}) == {"labels": LABELS}


def test_paths_with_or_without_dot_slash_and_raw_members(tmp_path):
    deb, sha = write(tmp_path, make_deb({"usr/share/a.gz": gzip.compress(b"A"), "./usr/share/b.bin": b"B\x00"}))
    assert debian.read_deb(deb, sha, {"a": "./usr/share/a.gz", "b": "usr/share/b.bin"}) == {"a": b"A", "b": b"B\x00"}


@pytest.mark.parametrize("data_name", ["data.tar.gz", "data.tar.bz2", "data.tar"])
def test_other_compressions(tmp_path, data_name):
    deb, sha = write(tmp_path, make_deb(data_name=data_name))
    assert debian.read_deb(deb, sha, MEMBERS) == RAW


def test_zst_refused_clearly_without_python_zstd(tmp_path):
    if debian._zstd is not None:
        pytest.skip("this Python reads zstd")
    deb, sha = write(tmp_path, make_deb(data_name="data.tar.zst", data=b"\x28\xb5\x2f\xfdjunk"))
    with pytest.raises(DataError, match=r"data\.tar\.zst needs Python 3\.14"):
        debian.read_deb(deb, sha, MEMBERS)


def test_wrong_sha256_names_both_digests_and_parses_nothing(tmp_path, monkeypatch):
    deb, sha = write(tmp_path, make_deb())
    wrong = "0" * 64
    monkeypatch.setattr(debian, "ar_members", lambda *a: pytest.fail("parsed before the sha256 check"))
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        debian.read_deb(deb, wrong, MEMBERS)
    assert wrong in str(e.value) and sha in str(e.value) and "\n" not in str(e.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        debian.read_deb(tmp_path / "absent.deb", "0" * 64, MEMBERS)


@pytest.mark.parametrize("cut, message", [
    (10, "truncated: member header"),  # inside the first member header
    (8 + 60 + 2, "truncated: ar member 'debian-binary'"),  # inside debian-binary's data
    (-40, "truncated: ar member 'data.tar.xz'"),  # inside data.tar.xz
])
def test_truncated_archive(tmp_path, cut, message):
    blob = make_deb()
    deb, sha = write(tmp_path, blob[:cut])
    with pytest.raises(DataError, match=message):
        debian.read_deb(deb, sha, MEMBERS)


def attempt(tmp_path: Path, blob: bytes) -> dict[str, bytes] | None:
    """read_deb on `blob` (with its own sha256): the files, or None after a one-line DataError."""
    deb, sha = write(tmp_path, blob)
    try:
        out = debian.read_deb(deb, sha, MEMBERS)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return None
    assert set(out) == set(MEMBERS)
    return out


def test_every_truncation_and_many_corruptions_of_the_deb_give_dataerror_only(tmp_path):
    """No prefix or byte-flipped copy of a valid .deb may raise anything but DataError."""
    blob = make_deb()
    assert all(attempt(tmp_path, blob[:n]) is None for n in range(len(blob)))
    rng = random.Random(0)
    for _ in range(200):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        attempt(tmp_path, bytes(b))


@pytest.mark.parametrize("data_name, mode",
                         [("data.tar.xz", "w:xz"), ("data.tar.gz", "w:gz"), ("data.tar.bz2", "w:bz2")])
def test_truncated_or_corrupt_data_tar_gives_dataerror_only(tmp_path, data_name, mode):
    """Inside a well-formed ar: every prefix and every one-bit flip of data.tar.* (lzma, zlib, bz2 and tar
    errors alike) ends in a DataError or in the files (the compressors' checks come after the members)."""
    files = {"./usr/share/doc/fake/README": b"a compressible file before the members. " * 200,  # flips hit codes
             **{MEMBERS[k]: gzip.compress(v) for k, v in RAW.items()}}
    tar = tar_bytes(files, mode)
    step = max(1, len(tar) // 250)  # about 250 prefixes and 250 flips, whatever the compressed size
    failures = 0
    for n in range(0, len(tar), step):
        failures += attempt(tmp_path, make_deb(data_name=data_name, data=tar[:n])) is None
    for i in range(0, len(tar), step):
        b = bytearray(tar)
        b[i] ^= 0x10
        failures += attempt(tmp_path, make_deb(data_name=data_name, data=bytes(b))) is None
    assert failures > len(tar) // step // 2


def test_padding_is_honoured(tmp_path):
    """An odd-sized member is followed by one pad byte; a reader that ignores it loses the next header."""
    deb, sha = write(tmp_path, ar_bytes([("debian-binary", b"2.0\n"), ("control.tar.xz", b"odd"),
                                         ("data.tar.xz", tar_bytes({MEMBERS["labels"]: gzip.compress(LABELS)}))]))
    assert debian.read_deb(deb, sha, {"labels": MEMBERS["labels"]}) == {"labels": LABELS}


def test_missing_member_is_named(tmp_path):
    deb, sha = write(tmp_path, make_deb({MEMBERS["images"]: gzip.compress(IMAGES)}))
    with pytest.raises(DataError, match="has no member ./usr/share/datasets/fake/labels-idx1-ubyte.gz"):
        debian.read_deb(deb, sha, MEMBERS)


@pytest.mark.parametrize("blob, message", [
    (b"PK\x03\x04 this is a zip, not a deb" * 4, "not a Debian package: no ar header"),
    (b"", "not a Debian package: no ar header"),
    (gzip.compress(b"hello"), "not a Debian package: no ar header"),
])
def test_non_ar_file(tmp_path, blob, message):
    deb, sha = write(tmp_path, blob)
    with pytest.raises(DataError, match=message):
        debian.read_deb(deb, sha, MEMBERS)


def test_ar_without_debian_binary_or_data_tar(tmp_path):
    deb, sha = write(tmp_path, ar_bytes([("hello.txt", b"hi")]))
    with pytest.raises(DataError, match="no 'debian-binary' member"):
        debian.read_deb(deb, sha, MEMBERS)
    deb, sha = write(tmp_path, ar_bytes([("debian-binary", b"2.0\n"), ("control.tar.xz", b"")]))
    with pytest.raises(DataError, match="0 data.tar.. members"):
        debian.read_deb(deb, sha, MEMBERS)


def test_two_data_tars_are_ambiguous(tmp_path):
    tar = tar_bytes({MEMBERS["labels"]: gzip.compress(LABELS)})
    deb, sha = write(tmp_path, ar_bytes([("debian-binary", b"2.0\n"), ("control.tar.xz", CONTROL),
                                         ("data.tar.xz", tar), ("data.tar.gz", tar)]))
    with pytest.raises(DataError, match=r"2 data\.tar\.\* members, expected 1"):
        debian.read_deb(deb, sha, {"labels": MEMBERS["labels"]})
    deb, sha = write(tmp_path, ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", tar), ("data.tar.xz", tar)]))
    with pytest.raises(DataError, match="'data.tar.xz' appears twice"):
        debian.read_deb(deb, sha, {"labels": MEMBERS["labels"]})


def test_bad_ar_header_fields(tmp_path):
    good = make_deb()
    bad_magic = bytearray(good)
    bad_magic[8 + 58] = ord("X")
    bad_size = bytearray(good)
    bad_size[8 + 48:8 + 58] = b"12x       "
    for blob, message in ((bad_magic, "bad ar member header"), (bad_size, "bad size field")):
        deb, sha = write(tmp_path, bytes(blob))
        with pytest.raises(DataError, match=message):
            debian.read_deb(deb, sha, MEMBERS)


@pytest.mark.parametrize("data_name", ["data.tar.xz", "data.tar.gz"])
def test_bad_tar(tmp_path, data_name):
    deb, sha = write(tmp_path, make_deb(data_name=data_name, data=b"this is not a compressed tar at all" * 3))
    with pytest.raises(DataError, match=f"cannot read {data_name}"):
        debian.read_deb(deb, sha, MEMBERS)


def test_unsupported_data_tar(tmp_path):
    deb, sha = write(tmp_path, make_deb(data_name="data.tar.lz4", data=b"x"))
    with pytest.raises(DataError, match=r"unsupported data\.tar\.lz4"):
        debian.read_deb(deb, sha, MEMBERS)


def test_member_that_is_not_gzip(tmp_path):
    deb, sha = write(tmp_path, make_deb({MEMBERS["images"]: IMAGES, MEMBERS["labels"]: gzip.compress(LABELS)}))
    with pytest.raises(DataError, match="images-idx3-ubyte.gz is not valid gzip"):
        debian.read_deb(deb, sha, MEMBERS)


def test_symlink_member_is_refused(tmp_path):
    deb, sha = write(tmp_path, make_deb({MEMBERS["images"]: gzip.compress(IMAGES)},
                                        links={MEMBERS["labels"]: "/etc/passwd"}))
    with pytest.raises(DataError, match="labels-idx1-ubyte.gz is not a regular file"):
        debian.read_deb(deb, sha, MEMBERS)


def test_dotdot_member_is_read_into_memory_and_written_nowhere(tmp_path, monkeypatch):
    """Traversal and absolute paths are only names to look up: their bytes come back, no file appears anywhere."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    absolute = str(tmp_path / "abs-evil")  # inside tmp_path, so even a broken reader cannot litter /tmp
    evil = {"evil": "../../evil.gz", "abs": absolute}
    deb, sha = write(tmp_path, make_deb({"../../evil.gz": gzip.compress(b"E"), absolute: b"A"}))
    before = sorted(tmp_path.rglob("*"))
    assert debian.read_deb(deb, sha, evil) == {"evil": b"E", "abs": b"A"}
    assert sorted(tmp_path.rglob("*")) == before


def test_check_md5(tmp_path):
    md5s = {k: hashlib.md5(v).hexdigest() for k, v in RAW.items()}
    debian.check_md5(RAW, md5s)
    with pytest.raises(DataError, match="labels md5 mismatch"):
        debian.check_md5({**RAW, "labels": b"x"}, md5s)
    with pytest.raises(DataError, match="images is missing"):
        debian.check_md5({"labels": LABELS}, md5s)


# --- the download, with a fake apt-get on PATH --------------------------------------------------

def fake_apt(tmp_path: Path, monkeypatch, script: str) -> None:
    """Put an `apt-get` shell script first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    apt = bin_dir / "apt-get"
    apt.write_text("#!/bin/sh\n" + script)
    apt.chmod(apt.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def serve(tmp_path: Path, monkeypatch, name: str, blob: bytes) -> None:
    """A fake apt-get that 'downloads' `blob` as `name` into its working directory."""
    src = tmp_path / "served.deb"
    src.write_bytes(blob)
    fake_apt(tmp_path, monkeypatch, f'[ "$1" = download ] || exit 9\ncp "{src}" "./{name}"\n')


def test_download_without_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get is not installed") as e:
        debian.download_deb("fake", tmp_path, log=lambda m: None)
    assert "apt-get download fake" in str(e.value) and "dpkg-deb -x" in str(e.value) and "--data-dir" in str(e.value)


def test_download_failure_reports_apt_message(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch, 'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    expected = r"apt-get download nope failed \(exit 100: E: Unable to locate package nope\)"
    with pytest.raises(DataError, match=expected) as e:
        debian.download_deb("nope", tmp_path, log=lambda m: None)
    assert "dpkg-deb -x" in str(e.value) and "--data-dir" in str(e.value) and "\n" not in str(e.value)


def test_download_that_writes_nothing(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch, "exit 0\n")
    with pytest.raises(DataError, match="wrote 0 .deb files"):
        debian.download_deb("fake", tmp_path, log=lambda m: None)


def test_download_returns_the_deb(tmp_path, monkeypatch):
    serve(tmp_path, monkeypatch, "fake_1_all.deb", b"!<arch>\n")
    folder = tmp_path / "dl"
    folder.mkdir()
    assert debian.download_deb("fake", folder, log=lambda m: None) == folder / "fake_1_all.deb"


def test_from_debian_end_to_end(tmp_path, monkeypatch):
    blob = make_deb()
    serve(tmp_path, monkeypatch, "fake_1_all.deb", blob)
    lines = []
    files = debian.from_debian("fake", "fake_1_all.deb", hashlib.sha256(blob).hexdigest(), MEMBERS, lines.append)
    assert files == RAW and any("fake_1_all.deb" in line for line in lines)


def test_from_debian_other_version_served(tmp_path, monkeypatch):
    blob = make_deb()
    serve(tmp_path, monkeypatch, "fake_2_all.deb", blob)
    with pytest.raises(DataError, match="apt served fake_2_all.deb, expected fake_1_all.deb") as e:
        debian.from_debian("fake", "fake_1_all.deb", "ab" * 32, MEMBERS, lambda m: None)
    assert "ab" * 32 in str(e.value) and hashlib.sha256(blob).hexdigest() in str(e.value)
    assert "--data-dir DIR/usr/share/datasets/fake" in str(e.value)


def test_from_debian_same_name_wrong_sha(tmp_path, monkeypatch):
    serve(tmp_path, monkeypatch, "fake_1_all.deb", make_deb())
    with pytest.raises(DataError, match="fake_1_all.deb: sha256 mismatch"):
        debian.from_debian("fake", "fake_1_all.deb", "ab" * 32, MEMBERS, lambda m: None)


@pytest.mark.slow
def test_real_debian_package():
    """Downloads dataset-fashion-mnist (31 MB) with apt-get: sha256 pinned, md5s as in the shared README."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not available")
    try:
        files = sources.from_debian(FASHION_MNIST, log=lambda m: None)
    except DataError as e:
        if "failed" in str(e):  # no archive reachable, or the package is not in this machine's sources
            pytest.skip(f"Debian archive unusable here: {e}")
        raise
    debian.check_md5(files, FASHION_MNIST.files)
    assert len(files["train-images-idx3-ubyte"]) == 47040016 and len(files["t10k-labels-idx1-ubyte"]) == 10008
