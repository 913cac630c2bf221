"""Writing files so that nothing is lost: a new version replaces the old one whole, or not at all.

Every file vaelab writes (checkpoints, metrics, configs, figures, reports, pages) is first written in full to a
sibling, fsynced, then renamed over the target. When the write fails half-way (disk full, read-only folder,
I/O error) the sibling is removed, the previous version stays as it was, and the caller gets one WriteFailed
naming the file and the reason. Reading files that come from elsewhere is bounded (`read_text_limited`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from vaelab.errors import RunError, WriteFailed

MAX_TEXT_BYTES = 64 << 20  # a config, metrics or history file larger than this is not one of vaelab's


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failed(path: Path, e: OSError) -> WriteFailed:
    """The one message for a failed write: which file, why, and that its previous version is intact."""
    had = "its previous version is intact" if Path(path).exists() else "nothing was written"
    return WriteFailed(f"could not write {path}: {e.strerror or e} ({had}; free space or fix the folder, "
                       "then run the command again)")


@contextmanager
def replacing(path, suffix: str = ".next"):
    """Yield a sibling path to write `path`'s new version into; on success it replaces `path` (renamed and
    made durable), on an OSError it is removed and WriteFailed is raised."""
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise write_failed(path, e) from None


def write_bytes_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` (which is then fsynced), raising OSError as the OS does."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (write a sibling, fsync, rename); WriteFailed if it cannot."""
    with replacing(path) as tmp:
        write_bytes_durably(tmp, text.encode("utf-8"))


def read_text_limited(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The text of a run's file, refused (RunError) above `limit` bytes before it is read into memory."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise RunError(f"{path} is {size / 2**20:,.0f} MiB: too large to be a vaelab file (limit "
                       f"{limit / 2**20:,.0f} MiB)")
    return path.read_text(encoding="utf-8")
