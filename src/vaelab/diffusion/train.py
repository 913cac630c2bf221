"""DDPM runs: typed config with two profiles, the training loop (EMA, exact resume), opening a trained run.

Training minimises || eps - eps_theta(x_t, t) ||^2 (Ho et al.'s L_simple, the annex's F.mse_loss) on
images scaled to [-1, 1], t uniform in 0 .. T-1. The loop mirrors train.py: uint8 data on the device,
batches sliced from a permutation that depends only on (seed, epoch), per-step losses checked for
NaN/Inf every `check_every` steps, one crash-safe checkpoint per epoch holding the weights, their
exponential moving average (prefix "ema."), the optimizer, the RNG states and the history.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vaelab.engine import checkpoint
from vaelab.data.images import MNIST, to_unit
from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.errors import VaelabError
from vaelab.engine.interrupt import Guard
from vaelab.diffusion.unet import UNet, parse_widths
from vaelab.engine.runs import pick_device, trained_config
from vaelab.engine.steps import make_optimizer
from vaelab.vae.train import batch_sizes, check_finite, epoch_order, restore_rng, save_epoch

EMA_PREFIX = "ema."
EVAL_SEED, EVAL_IMAGES = 20240602, 2000  # fixed test images, steps and noise: test_mse is comparable across epochs


@dataclass(frozen=True)
class UNetConfig:
    """The eps-network: channel widths (encoder levels, then bottleneck) and time-embedding size."""

    widths: str = "32-64-128-256"
    time_dim: int = 64

    def validate(self) -> None:
        """Raise VaelabError when the widths or embedding size are impossible."""
        parse_widths(self.widths)
        if self.time_dim < 4 or self.time_dim % 2:
            raise VaelabError(f"time_dim must be an even number >= 4 (got {self.time_dim})")


@dataclass(frozen=True)
class ScheduleConfig:
    """The forward noise process: schedule shape, number of steps T, linear-schedule endpoints."""

    kind: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def validate(self) -> None:
        """Raise VaelabError when the schedule cannot be built."""
        if not 2 <= self.timesteps <= 100_000:
            raise VaelabError(f"timesteps must be between 2 and 100000 (got {self.timesteps})")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise VaelabError(f"need 0 < beta_start <= beta_end < 1 (got {self.beta_start}, {self.beta_end})")


@dataclass(frozen=True)
class DDPMTrainConfig:
    """Optimisation settings; ema_decay is the per-step decay of the averaged weights used for sampling."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 5e-4
    warmup_steps: int = 500  # lr rises linearly over these steps: this UNet has no normalisation, and a
    # full-size Adam step on the initial weights can blow the loss up a thousandfold (seen at lr 2e-3)
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max gradient norm (0: off); tames the rare huge step on a nearly-clean x_t
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA (no loss scaling needed); ignored on the CPU

    def validate(self) -> None:
        """Raise VaelabError when an option is out of range."""
        if self.epochs < 1 or self.batch_size < 1 or self.seed < 0 or self.warmup_steps < 0:
            raise VaelabError("epochs and batch_size must be >= 1, seed and warmup_steps >= 0 "
                              f"(got {self.epochs}, {self.batch_size}, {self.seed}, {self.warmup_steps})")
        if not 0 < self.lr < float("inf"):
            raise VaelabError(f"lr must be a positive finite number (got {self.lr})")
        if not 0 <= self.ema_decay < 1:
            raise VaelabError(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        if not 0 <= self.grad_clip < float("inf"):
            raise VaelabError(f"grad_clip must be >= 0 (got {self.grad_clip})")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise VaelabError(f"device must be auto, cpu, cuda[:N] or mps (got {self.device!r})")


@dataclass(frozen=True)
class DDPMConfig:
    """Everything that defines a DDPM run; saved as config.json."""

    kind: Literal["ddpm"] = "ddpm"
    profile: str = "full"  # the profile it started from (informative; the fields below are what count)
    model: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: DDPMTrainConfig = field(default_factory=DDPMTrainConfig)

    def validate(self) -> "DDPMConfig":
        """Validate every part; return self so calls chain."""
        self.model.validate()
        self.schedule.validate()
        self.train.validate()
        return self


# full: the annex's UNet and schedule, meant for a GPU (measured 8.5 min an epoch on 1 CPU thread).
# quick: a 4x thinner UNet for CPUs: measured 2.8-3 min an epoch on 1 thread (10 min for the whole
# run with its samples.png), about half that on 2. Batch 64 and lr 2e-3 because in a budget of
# ~3000 steps more updates win: test MSE 0.035 after 2 epochs against 0.047 with batch 128 in our
# runs. The EMA horizon (~200 steps) is short to match.
PROFILES = {
    "full": DDPMConfig(profile="full"),
    "quick": DDPMConfig(profile="quick", model=UNetConfig("16-32-64-128", 64),
                        train=DDPMTrainConfig(epochs=3, batch_size=64, lr=2e-3, warmup_steps=200,
                                              ema_decay=0.995, amp=False)),
}


def profile_config(name: str, overrides: dict | None = None) -> DDPMConfig:
    """The config of profile `name` with dotted-key overrides ({"train.epochs": 3}), validated."""
    from vaelab.config import with_overrides

    if name not in PROFILES:
        raise VaelabError(f"unknown profile {name!r}: choose {', '.join(PROFILES)}")
    return with_overrides(PROFILES[name], overrides or {}).validate()


def build_unet(cfg: DDPMConfig) -> UNet:
    """The eps-network described by `cfg`."""
    return UNet(cfg.model.widths, cfg.model.time_dim)


def build_schedule(cfg: DDPMConfig) -> NoiseSchedule:
    """The noise schedule described by `cfg`."""
    s = cfg.schedule
    return NoiseSchedule(s.kind, s.timesteps, s.beta_start, s.beta_end)


def to_signed(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1], the DDPM's data range."""
    return to_unit(x_u8).mul_(2).sub_(1)


class EMA:
    """Exponential moving average of a model's parameters: ema <- d ema + (1 - d) theta after each step.

    d_n = min(decay, (1 + n) / (10 + n)) at update n (as TensorFlow's ExponentialMovingAverage), so the
    average is not dragged towards the random initial weights during the first few hundred steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average one step towards the current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        torch._foreach_lerp_(list(self.shadow.values()), [live[k] for k in self.shadow], 1 - d)


def checkpoint_weights(model: torch.nn.Module, ema: EMA) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors: the raw weights, and the EMA ones under "ema."."""
    return {**model.state_dict(), **{EMA_PREFIX + k: v for k, v in ema.shadow.items()}}


def split_weights(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(raw, ema) state_dicts from a checkpoint's tensors."""
    raw = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    return raw, ema


def eval_batch(x_u8: torch.Tensor, T: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Fixed (x0, t, eps) on EVAL_IMAGES test images, drawn once from EVAL_SEED on the CPU."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    idx = torch.randperm(len(x_u8), generator=g)[:EVAL_IMAGES]
    x0 = to_signed(x_u8[idx.to(x_u8.device)])
    t = torch.randint(0, T, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return x0.to(device), t.to(device), eps.to(device)


@torch.no_grad()
def eval_mse(model, schedule: NoiseSchedule, batch: tuple, amp: bool, size: int = 500) -> float:
    """Mean squared noise-prediction error on the fixed evaluation batch."""
    x0, t, eps = batch
    total = torch.zeros((), device=x0.device, dtype=torch.float64)
    for i in range(0, len(x0), size):
        sl = slice(i, i + size)
        with torch.autocast(x0.device.type, torch.bfloat16, enabled=amp):
            pred = model(schedule.q_sample(x0[sl], t[sl], eps[sl]), t[sl])
        total += F.mse_loss(pred.float(), eps[sl], reduction="sum").double()
    return total.item() / eps.numel()


def restore(run_dir: Path, model, ema: EMA, opt, device: torch.device) -> tuple[int, list, float]:
    """Load weights, EMA, optimizer and RNG states of the last completed epoch: (epoch, history, seconds)."""
    checkpoint.recover(run_dir)
    state = checkpoint.load_state(run_dir)
    raw, avg = split_weights(checkpoint.load_weights(run_dir / checkpoint.WEIGHTS, checkpoint_weights(model, ema)))
    model.load_state_dict(raw)
    for k, v in avg.items():
        ema.shadow[k].copy_(v)
    ema.updates = int(state["ema_updates"])
    opt.load_state_dict(state["optimizer"])
    restore_rng(state, device)
    return state["epoch"], list(state["history"]), float(state.get("seconds", 0.0))


def train_ddpm(run_dir: Path, cfg: DDPMConfig, data: MNIST, resume: bool = False, check_every: int = 50,
               on_epoch=None, log=lambda m: print(m, file=sys.stderr)) -> list[dict]:
    """Train (or resume) the DDPM of `cfg` into `run_dir`; on_epoch(epoch, ema_model) runs after each save."""
    tc = cfg.train
    device = pick_device(tc.device)
    amp = tc.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    torch.manual_seed(tc.seed)
    model = build_unet(cfg).to(device)
    ema_model = copy.deepcopy(model).eval()  # holds the EMA weights for evaluation; a copy draws no RNG
    ema = EMA(model, tc.ema_decay)
    opt = make_optimizer(model.parameters(), tc.lr)
    schedule = build_schedule(cfg).to(device)
    start, history, seconds = restore(run_dir, model, ema, opt, device) if resume else (0, [], 0.0)
    if start >= tc.epochs:
        log(f"{run_dir}: already trained for {start} epochs; nothing to do")
        return history
    x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
    evaluation = eval_batch(data.test_x, schedule.T, device)
    n, bs = len(x_train), tc.batch_size
    steps, sizes = batch_sizes(n, bs, device)
    with Guard() as guard:
        for epoch in range(start, tc.epochs):
            t0 = time.perf_counter()
            model.train()
            perm = epoch_order(n, tc.seed, epoch).to(device)
            per_step = torch.zeros(steps, device=device)  # the MSE of each step
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                       leave=False, disable=None, file=sys.stderr)
            for step in bar:
                x0 = to_signed(x_train[perm[step * bs:(step + 1) * bs]])  # (B, 1, 28, 28) in [-1, 1]
                t = torch.randint(0, schedule.T, (len(x0),), device=device)  # (B,)
                eps = torch.randn_like(x0)
                with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                    pred = model(schedule.q_sample(x0, t, eps), t)
                loss = F.mse_loss(pred.float(), eps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for group in opt.param_groups:  # a function of the step count only: resume stays exact
                    group["lr"] = tc.lr * min(1.0, (ema.updates + 1) / max(1, tc.warmup_steps))
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                ema.update(model)
                per_step[step] = loss.detach()
                if (step + 1) % check_every == 0 or step == steps - 1:
                    check_finite(per_step[: step + 1], epoch)
                    bar.set_postfix(mse=f"{per_step[step].item():.4f}")
            ema_model.load_state_dict(ema.shadow)
            record = {"epoch": epoch + 1, "train_mse": ((per_step * sizes).sum() / n).item(),
                      "test_mse_ema": eval_mse(ema_model, schedule, evaluation, amp),
                      "test_mse": eval_mse(model.eval(), schedule, evaluation, amp), "steps": ema.updates}
            seconds += time.perf_counter() - t0
            record.update(epoch_seconds=time.perf_counter() - t0, seconds=seconds)
            history.append(record)
            save_epoch(guard, run_dir, checkpoint_weights(model, ema), opt.state_dict(), history, seconds, epoch,
                       tc.epochs, device, ema_updates=ema.updates)
            log(f"epoch {epoch + 1}/{tc.epochs}  train mse {record['train_mse']:.4f}  test mse "
                f"{record['test_mse']:.4f} (EMA {record['test_mse_ema']:.4f})  {record['epoch_seconds']:.1f} s")
            if on_epoch is not None:
                on_epoch(epoch + 1, ema_model)
    return history


@dataclass
class DDPMRun:
    """An opened DDPM run folder: config, schedule, history and the network (EMA weights by default)."""

    path: Path
    cfg: DDPMConfig
    model: UNet
    schedule: NoiseSchedule
    history: list[dict]
    device: torch.device
    ema: bool


def open_ddpm(run_dir, device: str = "auto", ema: bool = True) -> DDPMRun:
    """Open a trained DDPM run: validate config.json, rebuild the UNet, load (EMA or raw) weights."""
    run_dir = Path(run_dir)
    cfg = trained_config(run_dir, "ddpm", DDPMConfig)
    dev = pick_device(device)
    model = build_unet(cfg)
    expected = {**model.state_dict(), **{EMA_PREFIX + k: v for k, v in model.state_dict().items()}}
    raw, avg = split_weights(checkpoint.load_weights(run_dir / checkpoint.WEIGHTS, expected))
    model.load_state_dict(avg if ema else raw)
    history = checkpoint.load_state(run_dir).get("history", [])
    return DDPMRun(run_dir, cfg, model.to(dev).eval(), build_schedule(cfg).to(dev), history, dev, ema)


def extend(cfg: DDPMConfig, epochs: int) -> DDPMConfig:
    """`cfg` with a new epoch target (for --resume --epochs)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs)).validate()
