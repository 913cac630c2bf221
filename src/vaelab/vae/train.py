"""The VAE on the engine: its batch, its loss and its test evaluation as callbacks of engine/loop.fit.

Data stay on the device as uint8 and each batch is x_train[idx] for a slice idx of the epoch's
permutation; the loop (engine/loop.py) orders, checks, records and checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaelab.data.images import Images, to_unit
from vaelab.engine.distributed import SINGLE, World
from vaelab.engine.loop import Family, Progress, fit, restore
from vaelab.engine.runs import pick_device
from vaelab.engine.steps import Compute, graphs_wanted, make_optimizer, set_lr, step_function
from vaelab.errors import VaelabError
from vaelab.vae.config import VAEConfig
from vaelab.vae.loss import elbo_terms
from vaelab.vae.networks import VAE, build_vae
from vaelab.vae.tensorboard import VAEBoards

TEST_SEED = 20240601  # fixed binarisation of the test set, so binarised -ELBOs are comparable


def test_images(x_u8: torch.Tensor, binarize: bool) -> torch.Tensor:
    """Test images in [0, 1]; with binarize, one fixed-seed Bernoulli draw (the same for every run)."""
    x = to_unit(x_u8)
    if binarize:
        g = torch.Generator(device=x.device).manual_seed(TEST_SEED)
        x = torch.bernoulli(x, generator=g)
    return x


@torch.no_grad()
def elbo_on(model: VAE, x: torch.Tensor, beta: float, batch: int = 1000,
            likelihood: str = "bernoulli") -> dict[str, float]:
    """Per-image loss, -ELBO, reconstruction and KL over `x` (one z sample per image) under `likelihood`."""
    model.eval()
    sums = torch.zeros(3, device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        out = model(xb)
        t = elbo_terms(out.logits, xb, out.mu, out.logvar, beta, likelihood)
        sums += torch.stack([t.loss, t.recon, t.kl]).double() * len(xb)
    loss, recon, kl = (sums / len(x)).tolist()
    return {"loss": loss, "neg_elbo": recon + kl, "recon": recon, "kl": kl}


def batch_images(x_train: torch.Tensor, idx: torch.Tensor, binarize: bool) -> torch.Tensor:
    """The batch x_train[idx] as floats in [0, 1] (B, 1, 28, 28); with binarize, a fresh Bernoulli draw."""
    x = to_unit(x_train[idx])
    return torch.bernoulli(x) if binarize else x


def vae_compute(model: VAE, x_train: torch.Tensor, tc) -> Compute:
    """The report's loss on the batch x_train[idx]: (loss to minimise, record [loss, recon, kl])."""
    def compute(idx: torch.Tensor):
        x = batch_images(x_train, idx, tc.binarize)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=tc.precision == "bf16", cache_enabled=False):
            out = model(x)
        terms = elbo_terms(out.logits.float(), x, out.mu.float(), out.logvar.float(), tc.beta, tc.likelihood)
        return terms.loss, torch.stack([terms.loss.detach(), terms.recon.detach(), terms.kl.detach()])
    return compute


def epoch_record(train: list[float], test: dict[str, float]) -> dict:
    """One epoch's metrics of one VAE: train [loss, recon, kl] means and the test evaluation, per image."""
    loss, recon, kl = train
    return {"train_loss": loss, "train_recon": recon, "train_kl": kl, "train_neg_elbo": recon + kl,
            **{f"test_{k}": v for k, v in test.items()}}


class VAEFamily(Family):
    """One VAE on the engine: the report's loss on each batch, the test -ELBO after each epoch, TensorBoard."""

    def __init__(self, run_dir: Path, cfg: VAEConfig, data: Images, resume: bool, device: torch.device,
                 check_every: int = 50, log=None, tensorboard: bool = False):
        self.tc, self.check_every, self.run_dir, self.device = cfg.train, check_every, run_dir, device
        self.divergence_factor, self.on_divergence = self.tc.divergence_factor, self.tc.on_divergence
        if log is not None:
            self.log = log
        torch.manual_seed(self.tc.seed)
        self.model = build_vae(cfg.model.family, cfg.model.arch, cfg.model.latent_dim).to(device)
        self.opt = make_optimizer(self.model.parameters(), self.tc.lr, capturable=graphs_wanted(device))
        self.lr_scale = 1.0  # below 1 after a rollback (engine/loop.py), saved with the checkpoint
        self.progress = self.restore() if resume else Progress.fresh(1)
        self.x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
        self.x_test = test_images(data.test_x.to(device), self.tc.binarize)
        self.boards = (VAEBoards([run_dir], [cfg], len(self.x_train), self.progress.epoch, lambda k: self.model,
                                 self.x_test) if tensorboard else None)
        self.make_step()

    def make_step(self) -> None:
        """The training step (captured anew after a rollback: a CUDA graph holds the learning rate it saw)."""
        set_lr(self.opt, self.tc.lr * self.lr_scale)
        self._step = step_function(vae_compute(self.model, self.x_train, self.tc), self.opt, self.device,
                                   self.tc.batch_size)

    def restore(self) -> Progress:
        """Weights, optimizer, RNG, history and learning-rate scale of the last checkpoint."""
        def load(k: int, weights: dict, state: dict) -> None:
            self.model.load_state_dict(weights)
            self.lr_scale = float(state.get("lr_scale", 1.0))
        return restore([self.run_dir], lambda k: self.model.state_dict(), load, self.opt, self.device)

    def rollback(self) -> float:
        """Back to the last checkpoint, at half the learning rate used so far."""
        scale = self.lr_scale / 2
        self.restore()
        self.lr_scale = scale
        self.make_step()
        return scale

    def train_mode(self) -> None:
        """model.train()."""
        self.model.train()

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step on x_train[idx]; record [loss, recon, kl]."""
        return self._step(idx)

    def records(self, epoch: int, train: torch.Tensor) -> list[dict]:
        """The epoch's training means and the test set's -ELBO."""
        test = elbo_on(self.model, self.x_test, self.tc.beta, likelihood=self.tc.likelihood)
        return [epoch_record(train.tolist(), test)]

    def state(self, k: int) -> tuple[dict, dict, dict]:
        """Weights, optimizer state, and the learning-rate scale after a rollback."""
        return self.model.state_dict(), self.opt.state_dict(), {"lr_scale": self.lr_scale} if self.lr_scale != 1 else {}

    def summary(self, epoch: int, recs: list[dict], seconds: float) -> str:
        """epoch, train loss, test -ELBO (recon, KL), seconds."""
        r = recs[0]
        return (f"epoch {epoch + 1}/{self.tc.epochs}  train loss {r['train_loss']:.2f}  test -ELBO "
                f"{r['test_neg_elbo']:.2f} (recon {r['test_recon']:.2f}, KL {r['test_kl']:.2f})  {seconds:.1f} s")

    def after_epoch(self, epoch: int, per_step: torch.Tensor, recs: list[dict], seconds: float) -> None:
        """TensorBoard, when asked for."""
        if self.boards is not None:
            self.boards.on_epoch(epoch, per_step, recs, seconds)

    def close(self) -> None:
        """Close the TensorBoard writers."""
        if self.boards is not None:
            self.boards.close()


def train_vae(run_dir: Path, cfg: VAEConfig, data: Images, resume: bool = False, check_every: int = 50,
              log=None, tensorboard: bool = False, world: World = SINGLE,
              device: torch.device | None = None) -> list[dict]:
    """Train (or resume) the VAE of `cfg` into `run_dir`; returns the per-epoch metrics history (and RUN/tb logs)."""
    if world.size > 1:
        raise VaelabError("a VAE trains in one process; DDP (--nproc, torchrun) is for the DDPM")
    device = device if device is not None else pick_device(cfg.train.device)
    family = VAEFamily(run_dir, cfg, data, resume, device, check_every, log, tensorboard)
    tc = cfg.train
    try:
        return fit(family, [run_dir], family.progress, tc.epochs, len(family.x_train), tc.batch_size, tc.seed,
                   device)[0]
    finally:
        family.close()
