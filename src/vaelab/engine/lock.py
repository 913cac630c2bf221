"""One writer per run folder: every command that writes into a run holds an OS lock on RUN/.lock.

The lock is an flock, so the kernel drops it when its process ends, however it ends (SIGKILL included): a
stale lock file of a dead process is simply taken over. The file holds the holder's PID and command, for
the message a second writer gets. Locks are re-entrant within one process (training, then evaluating the
same run, in one call). A process that starts DDP ranks (--nproc) holds the lock for them and names the
folders in VAELAB_RUN_LOCKS, so its ranks do not try to take it again; under a user's torchrun, rank 0
alone takes it. Readers never need it: every file of a run is replaced atomically (engine/checkpoint.py).
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from vaelab.errors import RunError

LOCK = ".lock"
HELD_ENV = "VAELAB_RUN_LOCKS"  # run folders that a parent process holds for this one (os.pathsep-separated)
_held: dict[str, list] = {}  # resolved run folder -> [fd or None (held by the parent), depth]


def _key(run_dir) -> str:
    return str(Path(run_dir).resolve())


def inherited() -> set[str]:
    """The run folders a parent process locked for this one (its DDP ranks)."""
    return {p for p in os.environ.get(HELD_ENV, "").split(os.pathsep) if p}


def holder(run_dir) -> str:
    """Who holds the lock of `run_dir`, as its lock file says ('pid 123 (vaelab train ...)'), or ''."""
    try:
        text = (Path(run_dir) / LOCK).read_text(encoding="utf-8", errors="replace")[:300].strip()
    except OSError:
        return ""
    pid, _, command = text.partition(" ")
    return f"process {pid} ({command})" if pid.isdigit() else ""


def _acquire(key: str, command: str, shown: str) -> None:
    if key in _held:
        _held[key][1] += 1
        return
    if key in inherited():
        _held[key] = [None, 1]
        return
    folder = Path(key)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"cannot lock the run folder {folder}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        who = holder(folder) or "another process"
        raise RunError(f"{shown} is in use by {who}; wait for it to finish (or stop it), or use another "
                       "folder") from None
    try:  # who holds it, for the message a second writer gets; the lock itself does not need it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, and the write that matters will say why
        pass
    _held[key] = [fd, 1]


def _release(key: str) -> None:
    entry = _held[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        if entry[0] is not None:
            os.close(entry[0])  # closing the descriptor releases the flock; the file stays (truncating would race)


@contextmanager
def run_lock(*run_dirs, command: str | None = None):
    """Hold the exclusive lock of each run folder (created if missing) for the block; RunError naming the
    holder if another process has one. Folders are locked in sorted order, so two callers never deadlock."""
    command = command or " ".join(["vaelab", *sys.argv[1:]])[:200]
    shown = {_key(d): str(d) for d in run_dirs}  # the folder as the user named it, for the message
    taken = []
    try:
        for key in sorted(shown):
            _acquire(key, command, shown[key])
            taken.append(key)
        yield
    finally:
        for key in reversed(taken):
            _release(key)


def locked_env(run_dirs) -> dict[str, str]:
    """The environment entry that tells child processes (DDP ranks) this process holds `run_dirs`' locks."""
    keys = sorted(inherited() | {_key(d) for d in run_dirs})
    return {HELD_ENV: os.pathsep.join(keys)}
