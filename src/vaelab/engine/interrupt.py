"""Ctrl-C and SIGTERM as exceptions, held back while a checkpoint is being written."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives; exit code 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class Guard:
    """Turns SIGINT/SIGTERM into Interrupted, except inside `critical()`, where it waits until the end."""

    def __init__(self):
        self.pending: int | None = None
        self.depth = 0
        self.previous: dict[int, object] = {}

    def handler(self, signum, frame):  # noqa: ARG002 (signal API)
        if self.depth:
            self.pending = signum
        else:
            raise Interrupted(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self.handler)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False

    @contextlib.contextmanager
    def critical(self):
        """A block that a signal cannot cut in half (a checkpoint write)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM raises Interrupted for the whole command (as Ctrl-C raises KeyboardInterrupt), so a sweep's
    `finally` stops its job processes instead of leaving them training; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 (signal API)
        raise Interrupted(signum)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
