"""TensorBoard for VAE runs (`--tensorboard`): the loop's records, samples and reconstructions, per run folder.

One writer per run folder (RUN/tb), also when several runs train as one stacked model, so
`tensorboard --logdir runs/` shows a sweep's runs side by side. Nothing here touches the global RNG: the
samples decode a fixed z, and the checkpoint is already written when this runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from vaelab.config import to_dict
from vaelab.engine.tblog import Board
from vaelab.vae.config import VAEConfig
from vaelab.vae.networks import VAE

NAMES = ("loss", "recon", "kl")  # the per-step record of vae_compute / stacked_compute, per image
N_SAMPLES, N_RECON = 32, 8
Z_SEED = 0  # the same z every epoch: the grid shows the model changing, not the draw


class VAEBoards:
    """The writers of K VAE runs trained together (K = 1 for `vaelab train`)."""

    def __init__(self, run_dirs: list[Path], cfgs: list[VAEConfig], n_train: int, start_epoch: int,
                 model_of: Callable[[int], VAE], x_test: torch.Tensor):
        tc = cfgs[0].train
        self.steps = (n_train + tc.batch_size - 1) // tc.batch_size
        self.boards = [Board(d, NAMES, self.steps, start_epoch, to_dict(c)) for d, c in zip(run_dirs, cfgs)]
        self.model_of, self.lr, self.n = model_of, tc.lr, n_train
        self.x = x_test[:N_RECON]  # (8, 1, 28, 28) in [0, 1]
        self.z = torch.randn(N_SAMPLES, cfgs[0].model.latent_dim, generator=torch.Generator().manual_seed(Z_SEED))

    @torch.no_grad()
    def on_epoch(self, epoch: int, per_step: torch.Tensor, records: list[dict], seconds: float) -> None:
        """Log epoch `epoch` (0-based) of every run: per-step records (steps, [K,] 3), metrics, images."""
        per_run = per_step.reshape(per_step.shape[0], len(self.boards), len(NAMES))  # (steps, K, 3)
        for k, board in enumerate(self.boards):
            board.steps(epoch, per_run[:, k])
            board.epoch(epoch, records[k], self.lr, self.n / seconds)
            model = self.model_of(k)
            device = next(model.parameters()).device
            board.images("samples", model.decode(self.z.to(device)), epoch)
            x = self.x.to(device)
            board.images("reconstructions (top: test images)", torch.cat([x, model.decode(model.encode(x)[0])]),
                         epoch, cols=N_RECON)
            board.writer.flush()

    def close(self) -> None:
        """Close every writer."""
        for board in self.boards:
            board.close()
