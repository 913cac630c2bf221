"""The DDPM on the engine (its batch, loss, EMA and evaluation as callbacks of engine/loop.fit), and
opening a trained DDPM run.

Training minimises || eps - eps_theta(x_t, t) ||^2 (Ho et al.'s L_simple, the annex's F.mse_loss) on
images scaled to [-1, 1], t uniform in 0 .. T-1. Each epoch's checkpoint holds the weights, their
exponential moving average (prefix "ema."), the optimizer, the RNG states and the history. On CUDA the
step is a replayed CUDA graph like the VAE's (engine/steps.py): the learning rate is then a device
tensor set before each replay, and the EMA update runs after it.

Under torchrun (engine/distributed.py) the network is wrapped in DDP and each rank trains on its slice
of every global batch, with its own noise stream; the step is then eager (a CUDA graph would have to
capture DDP's gradient all-reduce, which is not verified here). Every rank applies the same averaged
gradient, so weights and EMA stay identical on all of them.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vaelab.config import to_dict
from vaelab.data.images import Images, to_unit
from vaelab.diffusion.config import DDPMConfig
from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.diffusion.networks import UNet
from vaelab.engine import checkpoint, distributed
from vaelab.engine.distributed import SINGLE, World
from vaelab.engine.loop import Family, Progress, fit, restore
from vaelab.engine.runs import pick_device, trained_config
from vaelab.engine.tblog import Board, current_lr
from vaelab.engine.steps import Compute, graphs_wanted, make_optimizer, set_lr, step_function

EMA_PREFIX = "ema."
EVAL_SEED, EVAL_IMAGES = 20240602, 2000  # fixed test images, steps and noise: test_mse is comparable across epochs


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
            pred = model(schedule.add_noise(x0[sl], t[sl], eps[sl]), t[sl])
        total += F.mse_loss(pred.float(), eps[sl], reduction="sum").double()
    return total.item() / eps.numel()


def loss_weights(schedule: NoiseSchedule, loss: str, gamma: float) -> torch.Tensor | None:
    """Per-step weights w_t (T,) of the eps loss: None for L_simple; min(SNR_t, gamma) / SNR_t for min_snr
    (Hang et al. 2023, eq. for eps prediction), SNR_t = alpha_bar_t / (1 - alpha_bar_t)."""
    if loss == "simple":
        return None
    ab = torch.cumprod(1 - schedule.betas.double(), 0)  # not the float32 alpha_bar: 1 - ab_0 = 1e-4 needs float64
    snr = ab / (1 - ab)  # (T,)
    return (snr.clamp(max=gamma) / snr).float()


def ddpm_compute(model: UNet, schedule: NoiseSchedule, x_train: torch.Tensor, amp: bool,
                 world: World = SINGLE, weights: torch.Tensor | None = None) -> Compute:
    """The eps loss on the batch x_train[idx] (this rank's slice of it under DDP): a random t and eps per
    image, each image's squared error weighted by weights[t] (None: L_simple); (loss, record [the whole
    batch's loss])."""
    def compute(idx: torch.Tensor):
        x0 = to_signed(x_train[distributed.shard(idx, world)])  # (B, 1, 28, 28) in [-1, 1]; B: this rank's share
        t = torch.randint(0, schedule.T, (len(x0),), device=x0.device)  # (B,)
        eps = torch.randn_like(x0)
        with torch.autocast(x0.device.type, torch.bfloat16, enabled=amp):
            pred = model(schedule.add_noise(x0, t, eps), t)
        if weights is None and world.size == 1:  # L_simple, as the annex
            loss = F.mse_loss(pred.float(), eps)
            return loss, loss.detach().reshape(1)
        total = (F.mse_loss(pred.float(), eps, reduction="sum") if weights is None else
                 (F.mse_loss(pred.float(), eps, reduction="none") * weights[t].view(-1, 1, 1, 1)).sum())
        if world.size > 1:  # the mean over the whole batch, not this rank's slice (see distributed.mean_share)
            return distributed.mean_share(total, len(idx) * math.prod(x_train.shape[1:]), world)
        loss = total / eps.numel()
        return loss, loss.detach().reshape(1)
    return compute


def load_checkpoint(model: UNet, ema: EMA, tensors: dict, state: dict) -> None:
    """Put a checkpoint's raw weights into `model` and its averaged ones (and update count) into `ema`."""
    raw, avg = split_weights(tensors)
    model.load_state_dict(raw)
    for k, v in avg.items():
        ema.shadow[k].copy_(v)
    ema.updates = int(state["ema_updates"])


def train_ddpm(run_dir: Path, cfg: DDPMConfig, data: Images, resume: bool = False, check_every: int = 50,
               on_epoch=None, log=lambda m: print(m, file=sys.stderr), world: World = SINGLE,
               device: torch.device | None = None, tensorboard: bool = False) -> list[dict]:
    """Train (or resume) the DDPM of `cfg` into `run_dir`; on_epoch(epoch, ema_model) runs after each save
    (images it returns go to TensorBoard with `tensorboard`: RUN/tb, written by rank 0).
    Under DDP, `world` and `device` are distributed.init's (this rank's place and its device)."""
    tc = cfg.train
    device = device if device is not None else pick_device(tc.device)
    amp = tc.amp and device.type == "cuda" or tc.amp_cpu and device.type == "cpu"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    torch.manual_seed(tc.seed)
    model = build_unet(cfg).to(device)
    ema_model = copy.deepcopy(model).eval()  # holds the EMA weights for evaluation; a copy draws no RNG
    ema = EMA(model, tc.ema_decay)
    graphs = graphs_wanted(device) and world.size == 1
    opt = make_optimizer(model.parameters(), tc.lr, capturable=graphs, lr_tensor=True)
    schedule = build_schedule(cfg).to(device)
    progress = (restore([run_dir], lambda k: checkpoint_weights(model, ema),
                        lambda k, w, s: load_checkpoint(model, ema, w, s), opt, device, world=world)
                if resume else Progress.fresh(1))
    if not resume:
        distributed.split_rng(world)  # each rank its own noise stream (alone: nothing changes)
    x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
    evaluation = eval_batch(data.test_x, schedule.T, device)

    def warmup_lr() -> None:  # a function of the step count only: resume stays exact
        set_lr(opt, tc.lr * min(1.0, (ema.updates + 1) / max(1, tc.warmup_steps)))

    clip = (lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)) if tc.grad_clip > 0 else None
    net = distributed.wrap(model, world, device)  # DDP averages the gradients in backward; alone, the model
    weights = loss_weights(schedule, tc.loss, tc.snr_gamma)
    step = step_function(ddpm_compute(net, schedule, x_train, amp, world, weights), opt, device, tc.batch_size, graphs,
                         clip=clip, before=warmup_lr, after=lambda: ema.update(model))

    def records(epoch: int, train: torch.Tensor) -> list[dict]:
        if not world.is_main:  # only rank 0's history is written: the other ranks need not evaluate
            return [{"train_mse": train[0].item(), "steps": ema.updates}]
        ema_model.load_state_dict(ema.shadow)
        return [{"train_mse": train[0].item(), "test_mse_ema": eval_mse(ema_model, schedule, evaluation, amp),
                 "test_mse": eval_mse(model.eval(), schedule, evaluation, amp), "steps": ema.updates}]

    def summary(epoch: int, recs: list[dict], seconds: float) -> str:
        r = recs[0]
        return (f"epoch {epoch + 1}/{tc.epochs}  train mse {r['train_mse']:.4f}  test mse {r['test_mse']:.4f} "
                f"(EMA {r['test_mse_ema']:.4f})  {seconds:.1f} s")

    steps = (len(x_train) + tc.batch_size - 1) // tc.batch_size
    board = Board(run_dir, ("mse",), steps, progress.epoch, to_dict(cfg)) if tensorboard and world.is_main else None

    def after_epoch(e: int) -> None:
        images = on_epoch(e, ema_model) if on_epoch is not None else None
        if board is not None and isinstance(images, torch.Tensor):
            board.images("samples (EMA weights)", images, e - 1, cols=5)

    def log_epoch(epoch: int, per_step: torch.Tensor, recs: list[dict], seconds: float) -> None:
        board.steps(epoch, per_step)
        board.epoch(epoch, recs[0], current_lr(opt), len(x_train) / seconds)
        board.writer.flush()

    family = Family(step=step, records=records, summary=summary, train_mode=net.train,
                    state=lambda k: (checkpoint_weights(model, ema), opt.state_dict(), {"ema_updates": ema.updates}),
                    after_epoch=after_epoch, on_epoch=log_epoch if board is not None else None,
                    check_every=check_every, log=log)
    try:
        return fit(family, [run_dir], progress, tc.epochs, len(x_train), tc.batch_size, tc.seed, device, world)[0]
    finally:
        if board is not None:
            board.close()


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
