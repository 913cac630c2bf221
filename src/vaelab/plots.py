"""Figures from arrays that were already computed: pure matplotlib, no model, no training."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # the backend is the caller's: the command line picks Agg (cli/main.py)
import numpy as np

from vaelab.files import replacing


def save(fig, path: Path) -> Path:
    """Save `fig` as PNG atomically (a sibling file, then rename) and close it."""
    path = Path(path)
    try:
        with replacing(path, ".next.png") as tmp:
            fig.savefig(tmp, bbox_inches="tight", dpi=120)
    finally:
        plt.close(fig)
    return path


def image_grid(images: np.ndarray, rows: int, cols: int, title: str, path: Path,
               row_labels: list[str] | None = None, cell: float = 1.1) -> Path:
    """Images (n, 28, 28) in [0, 1] laid out rows x cols, grey, with a title and optional row labels."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=12)
    return save(fig, path)


def latent_scatter(points: np.ndarray, labels: np.ndarray, title: str, path: Path,
                   xlabel: str = "z_1", ylabel: str = "z_2", classes: tuple[str, ...] | None = None) -> Path:
    """2-D points coloured by class (tab10), as the report's latent-space figure; ticks named by `classes`."""
    classes = classes or tuple(str(c) for c in range(10))
    fig, ax = plt.subplots(figsize=(8, 6))
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=len(classes) - 0.5)
    cbar = fig.colorbar(sc, ax=ax, ticks=range(len(classes)))
    cbar.ax.set_yticklabels(classes)
    cbar.set_label("class")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return save(fig, path)


def manifold(images: np.ndarray, n: int, extent: float, title: str, path: Path) -> Path:
    """An n x n grid of decoded images (n*n, 28, 28) tiled into one picture over [-extent, extent]^2."""
    tiles = images.reshape(n, n, 28, 28).transpose(0, 2, 1, 3).reshape(n * 28, n * 28)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(tiles, cmap="gray", vmin=0, vmax=1, extent=(-extent, extent, -extent, extent))
    ax.set_title(title)
    ax.set_xlabel("z_1")
    ax.set_ylabel("z_2")
    return save(fig, path)
