"""Markdown pieces shared by the study reports: paths relative to the report, tables, timings."""

from __future__ import annotations

import os
from pathlib import Path


def shown_path(path: str | Path, base: str | Path | None = None) -> str:
    """`path` as a report or page prints it: relative to `base`, the folder of the file it appears in (default:
    the current directory), with '/' and '..' where it lies outside, never machine-absolute. A relative `path`
    is taken from the current directory, as the command that stored it took it."""
    base = Path.cwd() if base is None else Path(base)
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    except ValueError:  # on another drive (Windows): no relative path exists, show the name alone
        return Path(path).name


def md_table(header: list[str], body: list[list[str]]) -> list[str]:
    """A Markdown table's lines: header, rule, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in body)]


def timing_lines(seconds: dict[str, float], threads: int | None = None, device: str | None = None) -> list[str]:
    """Timings as a sentence (threads and device) and a Markdown table (phase | seconds, and the total)."""
    where = [*([f"on {device}"] if device else []), *([f"with {threads} thread(s)"] if threads else [])]
    rows = [[str(phase), f"{s:.1f}"] for phase, s in seconds.items()]
    if len(rows) > 1:
        rows.append(["total", f"{sum(seconds.values()):.1f}"])
    sentence = "Time per phase" + (", measured " + " ".join(where) if where else "") + ":"
    return [sentence, "", *md_table(["phase", "seconds"], rows)]
