"""Fashion-MNIST (or any data set) from a Debian package, for a machine that reaches only Debian's archive.

Some build and CI machines can reach a Debian mirror but none of the data sets' own download sites.
Debian packages Fashion-MNIST as `dataset-fashion-mnist`; `apt-get download` fetches its .deb (no
root needed) and this module reads the files out of it in pure Python, so that it works where dpkg
does not (macOS, Windows, a minimal container):

- the .deb's sha256 is checked before anything else is parsed;
- the .deb is an `ar` archive (global header `!<arch>\\n`, 60-byte member headers, members padded to
  an even length) holding `debian-binary`, `control.tar.*` and `data.tar.*`;
- `data.tar.*` (xz in the real package; gz, bz2 and plain tar too, zst where Python has
  `compression.zstd`) is opened with `tarfile` and only the requested regular files are read,
  into memory: nothing is ever extracted to disk, so member names such as `../x` cannot write anywhere;
- members ending in .gz are gunzipped.

Every malformed input (truncated archive, missing member, bad compression) becomes one DataError line.
The sha256 is the integrity check that counts: tarfile stops reading after the last requested member, so
a flipped byte inside a member's data can get past the xz/gz checksums (which sit after it).
The md5 of the uncompressed files is the caller's check (see `check_md5`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from vaelab.errors import DataError

try:  # Python 3.14+: zstd in the standard library (tarfile mode "r:zst")
    from compression import zstd as _zstd  # type: ignore[import-not-found]
except ImportError:  # older Pythons: .zst members are refused with a clear message
    _zstd = None

# what a broken compressed tar can raise (tarfile wraps some of these, not all)
TAR_ERRORS = (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError, ValueError) + (
    (_zstd.ZstdError,) if _zstd is not None else ())

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
TAR_MODES = {".tar": "r:", ".tar.gz": "r:gz", ".tar.xz": "r:xz", ".tar.bz2": "r:bz2", ".tar.zst": "r:zst"}
DOWNLOAD_TIMEOUT_S = 900


def by_hand(package: str, folder: str = "DIR/usr/share/datasets/<name>") -> str:
    """How to get the files without this module (one clause, for the end of an error message)."""
    return (f"get the files by hand: `apt-get download {package}`, then `dpkg-deb -x {package}_*.deb DIR` "
            f"and pass --data-dir {folder}")


def unpacked_dir(members: dict[str, str]) -> str:
    """Where `dpkg-deb -x ... DIR` puts the members (for error messages)."""
    dirs = {path.removeprefix("./").rpartition("/")[0] for path in members.values()}
    return "DIR/" + dirs.pop() if len(dirs) == 1 else "DIR/<folder of the files>"


def download_deb(package: str, folder: Path, log=print, *, unpacked: str = "DIR/usr/share/datasets/<name>") -> Path:
    """Run `apt-get download PACKAGE` in `folder` and return the path of the .deb it wrote."""
    folder = Path(folder)
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataError(f"cannot download Debian package {package}: apt-get is not installed; "
                        f"{by_hand(package, unpacked)}")
    before = set(folder.glob("*.deb"))
    log(f"  apt-get download {package} ...")
    start = time.monotonic()
    try:
        proc = subprocess.run([apt, "download", package], cwd=folder, capture_output=True, text=True,
                              timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"apt-get download {package} failed ({type(e).__name__}: {e}); "
                        f"{by_hand(package, unpacked)}") from None
    if proc.returncode != 0:
        why = " | ".join(line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip())[-300:]
        raise DataError(f"apt-get download {package} failed (exit {proc.returncode}: {why or 'no message'}); "
                        f"{by_hand(package, unpacked)}")
    new = sorted(set(folder.glob("*.deb")) - before)
    if len(new) != 1:
        raise DataError(f"apt-get download {package} wrote {len(new)} .deb files in {folder}, expected 1; "
                        f"{by_hand(package, unpacked)}")
    log(f"  got {new[0].name} ({new[0].stat().st_size / 1e6:.1f} MB) in {time.monotonic() - start:.1f} s")
    return new[0]


def ar_members(blob: bytes, what: str = "archive") -> dict[str, bytes]:
    """The members of an `ar` archive (name -> bytes), refusing any malformed or truncated input."""
    if not blob.startswith(AR_MAGIC):
        raise DataError(f"{what} is not a Debian package: no ar header ('!<arch>')")
    members: dict[str, bytes] = {}
    pos = len(AR_MAGIC)
    while pos < len(blob):
        if blob[pos:pos + 1] == b"\n" and pos + 1 == len(blob):  # tolerate a final padding byte
            break
        header = blob[pos:pos + AR_HEADER]
        if len(header) < AR_HEADER:
            raise DataError(f"{what} is truncated: member header at byte {pos} has {len(header)} of 60 bytes")
        if header[58:60] != b"`\n":
            raise DataError(f"{what} is corrupt: bad ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").rstrip(" ").rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DataError(f"{what} is corrupt: bad size field in ar member {name!r}") from None
        if size < 0:
            raise DataError(f"{what} is corrupt: negative size in ar member {name!r}")
        start = pos + AR_HEADER
        if start + size > len(blob):
            raise DataError(f"{what} is truncated: ar member {name!r} needs {size} bytes, "
                            f"{len(blob) - start} left")
        if name in members:
            raise DataError(f"{what} is corrupt: ar member {name!r} appears twice")
        members[name] = blob[start:start + size]
        pos = start + size + (size % 2)
    return members


def data_tar(members: dict[str, bytes], what: str) -> tuple[str, bytes]:
    """The (name, bytes) of the single data.tar.* member, after checking debian-binary."""
    if not members.get("debian-binary", b"").startswith(b"2."):
        raise DataError(f"{what} is not a Debian package: no 'debian-binary' member of format 2.x")
    names = [n for n in members if n.startswith("data.tar")]
    if len(names) != 1:
        raise DataError(f"{what} has {len(names)} data.tar.* members, expected 1 (members: {sorted(members)})")
    return names[0], members[names[0]]


def read_tar(name: str, blob: bytes, members: dict[str, str], what: str) -> dict[str, bytes]:
    """The raw bytes of each requested regular file in the tar `blob` (read into memory, never extracted)."""
    mode = TAR_MODES.get(name[len("data"):])
    if mode is None:
        raise DataError(f"{what}: unsupported {name} (supported: {', '.join('data' + s for s in TAR_MODES)})")
    if mode == "r:zst" and _zstd is None:
        raise DataError(f"{what}: {name} needs Python 3.14+ (compression.zstd); "
                        f"unpack it with dpkg-deb -x instead and use --data-dir")
    wanted = {path.removeprefix("./"): key for key, path in members.items()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode=mode) as tar:
            for info in tar:
                key = wanted.get(info.name.removeprefix("./"))
                if key is None or key in found:
                    continue
                if not info.isfile():
                    raise DataError(f"{what}: {members[key]} is not a regular file in {name}")
                f = tar.extractfile(info)
                found[key] = f.read() if f is not None else b""
                if len(found[key]) != info.size:
                    raise DataError(f"{what}: {members[key]} is truncated in {name}")
                if len(found) == len(members):
                    break
    except TAR_ERRORS as e:
        raise DataError(f"{what}: cannot read {name} ({type(e).__name__}: {e})") from None
    missing = [members[k] for k in members if k not in found]
    if missing:
        raise DataError(f"{what}: {name} has no member {', '.join(missing)}")
    return found


def gunzip(name: str, data: bytes, what: str) -> bytes:
    """`data` decompressed, or one DataError naming the member."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{what}: {name} is not valid gzip ({type(e).__name__}: {e})") from None


def read_deb(deb: Path, sha256: str, members: dict[str, str]) -> dict[str, bytes]:
    """Verify `deb`'s sha256, then return the requested data.tar members (name -> bytes, .gz gunzipped)."""
    deb = Path(deb)
    try:
        blob = deb.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {deb}: {e.strerror or e}") from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256.lower():
        raise DataError(f"{deb.name}: sha256 mismatch: expected {sha256.lower()}, got {actual} "
                        f"(a different or corrupt package; refusing to read it)")
    what = deb.name
    tar_name, tar_blob = data_tar(ar_members(blob, what), what)
    raw = read_tar(tar_name, tar_blob, members, what)
    return {key: gunzip(members[key], data, what) if members[key].endswith(".gz") else data
            for key, data in raw.items()}


def check_md5(files: dict[str, bytes], md5s: dict[str, str], what: str = "package") -> None:
    """Raise DataError unless every file named in `md5s` is present with that md5."""
    for name, md5 in md5s.items():
        if name not in files:
            raise DataError(f"{what}: {name} is missing")
        got = hashlib.md5(files[name]).hexdigest()
        if got != md5:
            raise DataError(f"{what}: {name} md5 mismatch: expected {md5}, got {got}")


def from_debian(package: str, version_file: str, sha256: str, members: dict[str, str], log=print) -> dict[str, bytes]:
    """Download `package` with apt-get into a temporary folder, verify it and return the requested files."""
    with tempfile.TemporaryDirectory(prefix="vaelab-deb-") as tmp:
        deb = download_deb(package, Path(tmp), log, unpacked=unpacked_dir(members))
        if deb.name != version_file:
            actual = hashlib.sha256(deb.read_bytes()).hexdigest()
            if actual != sha256.lower():
                raise DataError(f"apt served {deb.name}, expected {version_file} (sha256 {actual}, expected "
                                f"{sha256.lower()}): this archive no longer has the pinned version; fetch "
                                f"{version_file} from snapshot.debian.org, check its sha256, unpack it with "
                                f"`dpkg-deb -x {version_file} DIR` and pass --data-dir {unpacked_dir(members)}")
        return read_deb(deb, sha256, members)
