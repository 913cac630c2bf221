"""The VAE training loop: one plain loop, top to bottom, with an exact-resume checkpoint per epoch.

Data stay on the device as uint8 and each batch is a slice of a seeded permutation (the order of
epoch e depends only on (seed, e), so a resumed run sees the same batches). Per-step losses are
kept in a device tensor and read back every `check_every` steps, not every step: one host sync
per check instead of one per step, and the first non-finite step is still named exactly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaelab.engine import checkpoint
from vaelab.config import RunConfig
from vaelab.data.images import MNIST, to_unit
from vaelab.errors import TrainingDiverged
from vaelab.engine.interrupt import Guard
from vaelab.vae.losses import elbo_terms
from vaelab.vae.models import VAE, build_vae
from vaelab.engine.runs import pick_device
from vaelab.engine.steps import Compute, graphs_wanted, load_optimizer_state, make_optimizer, step_function

TEST_SEED = 20240601  # fixed binarisation of the test set, so binarised -ELBOs are comparable


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch `epoch`: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def test_images(x_u8: torch.Tensor, binarize: bool) -> torch.Tensor:
    """Test images in [0, 1]; with binarize, one fixed-seed Bernoulli draw (the same for every run)."""
    x = to_unit(x_u8)
    if binarize:
        g = torch.Generator(device=x.device).manual_seed(TEST_SEED)
        x = torch.bernoulli(x, generator=g)
    return x


@torch.no_grad()
def elbo_on(model: VAE, x: torch.Tensor, beta: float, batch: int = 1000) -> dict[str, float]:
    """Per-image loss, -ELBO, reconstruction and KL over `x` (one z sample per image)."""
    model.eval()
    sums = torch.zeros(3, device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        out = model(xb)
        t = elbo_terms(out.logits, xb, out.mu, out.logvar, beta)
        sums += torch.stack([t.loss, t.recon, t.kl]).double() * len(xb)
    loss, recon, kl = (sums / len(x)).tolist()
    return {"loss": loss, "neg_elbo": recon + kl, "recon": recon, "kl": kl}


def restore_rng(state: dict, device: torch.device) -> None:
    """Put back the RNG states a checkpoint saved (CPU, and CUDA where the run used it)."""
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)


def restore(run_dir: Path, model: VAE, opt, device: torch.device) -> tuple[int, list, float]:
    """Load weights, optimizer and RNG states of the last completed epoch: (epoch, history, seconds)."""
    checkpoint.recover(run_dir)
    state = checkpoint.load_state(run_dir)
    model.load_state_dict(checkpoint.load_weights(run_dir / checkpoint.WEIGHTS, model.state_dict()))
    load_optimizer_state(opt, state["optimizer"])
    restore_rng(state, device)
    return state["epoch"], list(state["history"]), float(state.get("seconds", 0.0))


def batch_sizes(n: int, bs: int, device) -> tuple[int, torch.Tensor]:
    """Steps of an epoch and each step's batch size (the last one may be short), to weight batch means."""
    steps = (n + bs - 1) // bs
    sizes = torch.full((steps,), float(bs), device=device)
    sizes[-1] = n - bs * (steps - 1)
    return steps, sizes


def check_finite(losses: torch.Tensor, epoch: int) -> None:
    """Raise TrainingDiverged naming the first non-finite step of `losses` (steps,) or (steps, models)."""
    bad = ~torch.isfinite(losses.reshape(len(losses), -1)).all(1)
    if bad.any():
        first = int(bad.nonzero()[0])
        value = losses[first].tolist()
        raise TrainingDiverged(f"loss became {value} at epoch {epoch + 1}, step {first + 1}; "
                               f"training stopped, the checkpoint of epoch {epoch} is kept")


def save_epoch(guard: Guard, run_dir: Path, weights: dict, opt_state: dict, history: list, seconds: float,
               epoch: int, epochs: int, device: torch.device, **extra) -> None:
    """Checkpoint the end of `epoch` (0-based) with everything an exact resume needs, and metrics.jsonl."""
    state = {"optimizer": opt_state, "rng_cpu": torch.get_rng_state(), "history": history,
             "seconds": seconds, "finished": epoch + 1 == epochs, **extra}
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    with guard.critical():
        checkpoint.save(run_dir, weights, state, epoch + 1)
        checkpoint.write_metrics(run_dir, history)


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
        terms = elbo_terms(out.logits.float(), x, out.mu.float(), out.logvar.float(), tc.beta)
        return terms.loss, torch.stack([terms.loss.detach(), terms.recon.detach(), terms.kl.detach()])
    return compute


def train_epoch(step, x_train: torch.Tensor, perm: torch.Tensor, batch_size: int, steps_iter,
                check_every: int = 50, epoch: int = 0) -> torch.Tensor:
    """One pass over x_train in the order `perm`, step(idx) per batch: (steps, *record) per-step records,
    record[..., 0] the loss (one model: (steps, 3); K stacked models: (steps, K, 3))."""
    per_step = None
    for i in steps_iter:
        record = step(perm[i * batch_size:(i + 1) * batch_size])
        if per_step is None:
            per_step = torch.zeros(len(steps_iter), *record.shape, device=x_train.device)
        per_step[i] = record  # a copy on the device: no host sync
        if (i + 1) % check_every == 0 or i == len(steps_iter) - 1:
            check_finite(per_step[: i + 1, ..., 0], epoch)
            if hasattr(steps_iter, "set_postfix"):
                steps_iter.set_postfix(loss=" ".join(f"{v:.1f}" for v in per_step[i, ..., 0].reshape(-1).tolist()))
    return per_step


def train_vae(run_dir: Path, cfg: RunConfig, data: MNIST, resume: bool = False,
              check_every: int = 50, log=lambda m: print(m, file=sys.stderr)) -> list[dict]:
    """Train (or resume) the VAE of `cfg` into `run_dir`; returns the per-epoch metrics history."""
    tc = cfg.train
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    model = build_vae(cfg.model.family, cfg.model.arch, cfg.model.latent_dim).to(device)
    opt = make_optimizer(model.parameters(), tc.lr, capturable=graphs_wanted(device))
    start, history, seconds = restore(run_dir, model, opt, device) if resume else (0, [], 0.0)
    if start >= tc.epochs:
        log(f"{run_dir}: already trained for {start} epochs; nothing to do")
        return history
    x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
    x_test = test_images(data.test_x.to(device), tc.binarize)
    n = len(x_train)
    steps, sizes = batch_sizes(n, tc.batch_size, device)
    step = step_function(vae_compute(model, x_train, tc), opt, device, tc.batch_size)
    with Guard() as guard:
        for epoch in range(start, tc.epochs):
            t0 = time.perf_counter()
            model.train()
            perm = epoch_order(n, tc.seed, epoch).to(device)
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                       leave=False, disable=None, file=sys.stderr)
            per_step = train_epoch(step, x_train, perm, tc.batch_size, bar, check_every, epoch)
            train = ((per_step * sizes[:, None]).sum(0) / n).tolist()
            test = elbo_on(model, x_test, tc.beta)
            seconds += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "train_loss": train[0], "train_recon": train[1],
                      "train_kl": train[2], "train_neg_elbo": train[1] + train[2],
                      **{f"test_{k}": v for k, v in test.items()},
                      "epoch_seconds": time.perf_counter() - t0, "seconds": seconds}
            history.append(record)
            save_epoch(guard, run_dir, model.state_dict(), opt.state_dict(), history, seconds, epoch, tc.epochs, device)
            log(f"epoch {epoch + 1}/{tc.epochs}  train loss {train[0]:.2f}  test -ELBO "
                f"{test['neg_elbo']:.2f} (recon {test['recon']:.2f}, KL {test['kl']:.2f})  "
                f"{record['epoch_seconds']:.1f} s")
    return history
