"""TensorBoard logs of a run, under RUN/tb (the optional `tensorboard` extra): `--tensorboard` on train commands.

Per step: the step's record (loss and its parts); per epoch: every number of the epoch's metrics record,
the learning rate and images per second; image grids (samples, reconstructions) and the config as text.
The per-step records are read back once per epoch (one host sync), never per step. A resumed run purges
the events written after its last checkpoint, so `tensorboard --logdir runs/` shows each step once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vaelab.errors import VaelabError

INSTALL = "pip install 'vaelab[tensorboard]'"
FOLDER = "tb"


def require():
    """torch's SummaryWriter class; VaelabError saying how to install tensorboard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's module imports the tensorboard package, an optional extra
        raise VaelabError(f"--tensorboard needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


def summary_writer(log_dir: Path, purge_step: int | None):
    """A SummaryWriter on log_dir, purging events from purge_step on (a resumed run redoes them)."""
    return require()(log_dir=str(log_dir), purge_step=purge_step)


def grid(images: torch.Tensor, cols: int = 8, pad: int = 2) -> torch.Tensor:
    """Images (N, 1, H, W) in [0, 1] -> one (1, rows*(H+pad)+pad, cols*(W+pad)+pad) image, white gaps."""
    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    out = torch.ones(1, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):  # at most a few dozen tiles, once an epoch
        r, c = divmod(i, cols)
        out[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return out


class Board:
    """One run's TensorBoard writer: per-step records, per-epoch metrics, images and the config."""

    def __init__(self, run_dir: Path, names: tuple[str, ...], steps_per_epoch: int, start_epoch: int = 0,
                 config: dict | None = None):
        # purge_step: events of an epoch that crashed before its checkpoint are dropped when it is redone (its first
        # step is start_epoch * steps + 1; the finished epoch's own scalars sit at its last step and are kept)
        first = start_epoch * steps_per_epoch + 1
        self.writer = summary_writer(Path(run_dir) / FOLDER, first if start_epoch else None)
        self.names, self.steps_per_epoch = names, steps_per_epoch
        if config is not None and start_epoch == 0:
            text = json.dumps(config, indent=2)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def steps(self, epoch: int, per_step: torch.Tensor) -> None:
        """Scalars train_step/NAME for each step of `epoch` (0-based) from its records (steps, R)."""
        values = per_step.detach().float().cpu()  # the one host sync of the epoch's logging
        base = epoch * self.steps_per_epoch
        for i, row in enumerate(values.tolist()):
            for name, v in zip(self.names, row):
                self.writer.add_scalar(f"train_step/{name}", v, base + i + 1)

    def epoch(self, epoch: int, record: dict, lr: float | None, images_per_second: float) -> None:
        """Scalars epoch/KEY for every number of the epoch's record, with the learning rate and throughput."""
        step = (epoch + 1) * self.steps_per_epoch
        for key, v in record.items():
            if isinstance(v, (int, float)) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", float(v), step)
        if lr is not None:
            self.writer.add_scalar("epoch/lr", float(lr), step)
        self.writer.add_scalar("epoch/images_per_second", images_per_second, step)

    def images(self, tag: str, images: torch.Tensor, epoch: int, cols: int = 8) -> None:
        """An image grid (tag) of images (N, 1, H, W) in [0, 1] after `epoch` (0-based)."""
        self.writer.add_image(tag, grid(images.detach().float().cpu().clamp(0, 1), cols),
                              (epoch + 1) * self.steps_per_epoch)

    def close(self) -> None:
        """Flush the events to disk and close the file."""
        self.writer.close()


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The learning rate of the optimizer's first group (a tensor when the step is a CUDA graph)."""
    lr = opt.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
