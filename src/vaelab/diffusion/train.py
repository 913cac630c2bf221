"""The DDPM on the engine: its batch, loss, EMA and evaluation as a Family of engine/loop.fit.

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
from pathlib import Path

import torch
import torch.nn.functional as F

from vaelab.config import to_dict
from vaelab.data.images import Images, to_signed
from vaelab.diffusion.config import DDPMConfig
from vaelab.diffusion.figures import progress_grid
from vaelab.diffusion.loss import eps_sse, loss_weights
from vaelab.diffusion.networks import UNet
from vaelab.diffusion.run import EMA_PREFIX, build_schedule, build_unet, split_weights
from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.engine import distributed
from vaelab.engine.distributed import SINGLE, World
from vaelab.engine.loop import Family, Progress, fit, restore
from vaelab.engine.runs import pick_device
from vaelab.engine.steps import Compute, graphs_wanted, make_optimizer, set_lr, step_function
from vaelab.engine.tblog import Board, current_lr

EVAL_SEED, EVAL_IMAGES = 20240602, 2000  # fixed test images, steps and noise: test_mse is comparable across epochs


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
        total = eps_sse(pred, eps, t, weights)
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


class DDPMFamily(Family):
    """The DDPM on the engine: the eps loss with warm-up, clipping and EMA; test MSE, samples and TensorBoard."""

    loss_key = "train_mse"

    def __init__(self, run_dir: Path, cfg: DDPMConfig, data: Images, resume: bool, device: torch.device,
                 world: World = SINGLE, check_every: int = 50, log=None, tensorboard: bool = False,
                 samples: bool = False):
        tc = self.tc = cfg.train
        self.run_dir, self.world, self.device, self.check_every, self.samples = run_dir, world, device, check_every, samples
        if log is not None:
            self.log = log
        self.amp = tc.amp and device.type == "cuda" or tc.amp_cpu and device.type == "cpu"
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.manual_seed(tc.seed)
        self.model = build_unet(cfg).to(device)
        self.ema_model = copy.deepcopy(self.model).eval()  # holds the EMA weights for evaluation; draws no RNG
        self.ema = EMA(self.model, tc.ema_decay)
        graphs = graphs_wanted(device) and world.size == 1
        self.opt = make_optimizer(self.model.parameters(), tc.lr, capturable=graphs, lr_tensor=True)
        self.schedule = build_schedule(cfg).to(device)
        self.divergence_factor, self.on_divergence = tc.divergence_factor, tc.on_divergence
        self.lr_scale = 1.0  # below 1 after a rollback (engine/loop.py), saved with the checkpoint
        self.progress = self.restore() if resume else Progress.fresh(1)
        if not resume:
            distributed.split_rng(world)  # each rank its own noise stream (alone: nothing changes)
        self.x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
        self.evaluation = eval_batch(data.test_x, self.schedule.T, device)
        clip = ((lambda: torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip))
                if tc.grad_clip > 0 else None)
        self.net = distributed.wrap(self.model, world, device)  # DDP averages the gradients in backward
        weights = loss_weights(self.schedule, tc.loss, tc.snr_gamma)
        self._step = step_function(ddpm_compute(self.net, self.schedule, self.x_train, self.amp, world, weights),
                                   self.opt, device, tc.batch_size, graphs, clip=clip, before=self.warmup_lr,
                                   after=lambda: self.ema.update(self.model))
        steps = (len(self.x_train) + tc.batch_size - 1) // tc.batch_size
        self.board = (Board(run_dir, ("mse",), steps, self.progress.epoch, to_dict(cfg))
                      if tensorboard and world.is_main else None)

    def restore(self) -> Progress:
        """Weights, EMA, optimizer, RNG, history and learning-rate scale of the last checkpoint."""
        def load(k: int, weights: dict, state: dict) -> None:
            load_checkpoint(self.model, self.ema, weights, state)
            self.lr_scale = float(state.get("lr_scale", 1.0))
        return restore([self.run_dir], lambda k: checkpoint_weights(self.model, self.ema), load, self.opt,
                       self.device, world=self.world)

    def rollback(self) -> float:
        """Back to the last checkpoint, at half the learning rate used so far (the step reads it each time)."""
        scale = self.lr_scale / 2
        self.restore()
        self.lr_scale = scale
        return scale

    def warmup_lr(self) -> None:
        """The learning rate of the next step: a function of the step count (and of the rollbacks' scale)
        only, so resume stays exact."""
        warm = min(1.0, (self.ema.updates + 1) / max(1, self.tc.warmup_steps))
        set_lr(self.opt, self.tc.lr * self.lr_scale * warm)

    def train_mode(self) -> None:
        """net.train()."""
        self.net.train()

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step (and EMA update) on x_train[idx]; record [mse]."""
        return self._step(idx)

    def records(self, epoch: int, train: torch.Tensor) -> list[dict]:
        """Training MSE, and the test MSE of the raw and EMA weights (rank 0 only: the others write nothing)."""
        if not self.world.is_main:
            return [{"train_mse": train[0].item(), "steps": self.ema.updates}]
        self.ema_model.load_state_dict(self.ema.shadow)
        return [{"train_mse": train[0].item(),
                 "test_mse_ema": eval_mse(self.ema_model, self.schedule, self.evaluation, self.amp),
                 "test_mse": eval_mse(self.model.eval(), self.schedule, self.evaluation, self.amp),
                 "steps": self.ema.updates}]

    def state(self, k: int) -> tuple[dict, dict, dict]:
        """Raw and EMA weights, optimizer state, the EMA's update count."""
        scale = {"lr_scale": self.lr_scale} if self.lr_scale != 1 else {}
        return checkpoint_weights(self.model, self.ema), self.opt.state_dict(), {"ema_updates": self.ema.updates,
                                                                              **scale}

    def summary(self, epoch: int, recs: list[dict], seconds: float) -> str:
        """epoch, train and test MSE, seconds."""
        r = recs[0]
        return (f"epoch {epoch + 1}/{self.tc.epochs}  train mse {r['train_mse']:.4f}  test mse {r['test_mse']:.4f} "
                f"(EMA {r['test_mse_ema']:.4f})  {seconds:.1f} s")

    def after_epoch(self, epoch: int, per_step: torch.Tensor, recs: list[dict], seconds: float) -> None:
        """TensorBoard's scalars, then samples.png of the EMA weights (and into TensorBoard)."""
        if self.board is not None:
            self.board.steps(epoch, per_step)
            self.board.epoch(epoch, recs[0], current_lr(self.opt), len(self.x_train) / seconds)
            self.board.writer.flush()
        if self.samples:
            images = progress_grid(self.run_dir, epoch + 1, self.ema_model, self.schedule, self.device,
                                   amp=self.tc.amp)
            if self.board is not None:
                self.board.images("samples (EMA weights)", images, epoch, cols=5)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.board is not None:
            self.board.close()


def train_ddpm(run_dir: Path, cfg: DDPMConfig, data: Images, resume: bool = False, check_every: int = 50,
               log=None, tensorboard: bool = False, world: World = SINGLE, device: torch.device | None = None,
               samples: bool = False) -> list[dict]:
    """Train (or resume) the DDPM of `cfg` into `run_dir`; with `samples`, samples.png after each epoch
    (and into TensorBoard with `tensorboard`: RUN/tb, written by rank 0).
    Under DDP, `world` and `device` are distributed.init's (this rank's place and its device)."""
    device = device if device is not None else pick_device(cfg.train.device)
    family = DDPMFamily(run_dir, cfg, data, resume, device, world, check_every, log, tensorboard, samples)
    tc = cfg.train
    try:
        return fit(family, [run_dir], family.progress, tc.epochs, len(family.x_train), tc.batch_size, tc.seed,
                   device, world)[0]
    finally:
        family.close()
