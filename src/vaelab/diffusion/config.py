"""The configuration of a DDPM run (saved as config.json), and its two profiles: the annex's and a CPU one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vaelab.config import check_device, check_divergence, with_overrides
from vaelab.data import registry
from vaelab.errors import VaelabError


SCHEDULE_KINDS = ("linear", "cosine")  # diffusion/schedule.py SCHEDULES, by name (no torch here)
SAMPLER_NAMES = ("ddpm", "ddim")  # diffusion/schedule.py SAMPLERS, by name
ANNEX_WIDTHS = "32-64-128-256"  # encoder 32, 64, 128; bottleneck 256
ANNEX_TIME_DIM = 64


def parse_widths(widths: str) -> tuple[int, ...]:
    """Channel widths "a-b-...-z" (encoder levels, then the bottleneck); VaelabError if impossible."""
    try:
        dims = tuple(int(p) for p in widths.split("-"))
    except ValueError:
        dims = ()
    if len(dims) < 2 or min(dims) < 1:
        raise VaelabError(f"UNet widths {widths!r} must be at least two positive integers such as "
                          f"{ANNEX_WIDTHS} (encoder levels, then the bottleneck)")
    if len(dims) > 5:  # 28 -> 14 -> 7 -> 3 -> 1: a fifth pooling would leave nothing to convolve
        raise VaelabError(f"UNet widths {widths!r}: at most 4 encoder levels fit a 28x28 image")
    return dims


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


LOSSES = ("simple", "min_snr")


@dataclass(frozen=True)
class DDPMTrainConfig:
    """Optimisation settings; ema_decay is the per-step decay of the averaged weights used for sampling."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 5e-4
    warmup_steps: int = 500  # lr rises linearly over these steps: this UNet has no normalisation, and a
    # full-size Adam step on the initial weights can blow the loss up
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max gradient norm (0: off); tames the rare huge step on a nearly-clean x_t
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA (no loss scaling needed); on the CPU only with amp_cpu
    amp_cpu: bool = False  # bfloat16 autocast of the training step on the CPU too: pays on CPUs with native
    # bf16 (AVX512-BF16, AMX); docs/performance.md has the measurements
    loss: Literal["simple", "min_snr"] = "simple"  # L_simple (Ho et al.), or min-SNR-gamma weighting
    snr_gamma: float = 5.0  # min_snr: each t weighs min(SNR_t, gamma) / SNR_t (Hang et al. 2023, for eps targets)
    divergence_factor: float = 3.0  # an epoch whose training loss is above this times the best epoch's has
    # diverged (0: off; engine/loop.py)
    on_divergence: str = "stop"  # "stop" (exit code 5, the last good checkpoint kept) or "rollback"

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
        if not 0 < self.snr_gamma < float("inf"):
            raise VaelabError(f"snr_gamma must be a positive finite number (got {self.snr_gamma})")
        if self.loss not in LOSSES:
            raise VaelabError(f"unknown loss {self.loss!r}: choose {', '.join(LOSSES)}")
        check_device(self.device)
        check_divergence(self.divergence_factor, self.on_divergence)


@dataclass(frozen=True)
class DDPMConfig:
    """Everything that defines a DDPM run; saved as config.json."""

    kind: Literal["ddpm"] = "ddpm"
    dataset: str = registry.DEFAULT  # a name of the dataset registry; runs written before it existed are MNIST
    profile: str = "full"  # the profile it started from (informative; the fields below are what count)
    model: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: DDPMTrainConfig = field(default_factory=DDPMTrainConfig)

    def validate(self) -> "DDPMConfig":
        """Validate every part; return self so calls chain."""
        registry.get(self.dataset)
        self.model.validate()
        self.schedule.validate()
        self.train.validate()
        return self


# full: the annex's UNet and schedule, meant for a GPU.
# quick: a 4x thinner UNet for CPUs and a budget of a few thousand steps, where more updates win: batch 64,
# lr 2e-3, and a short EMA horizon (~200 steps) to match.
# cpu: the quick UNet trained 8x longer: bfloat16 autocast of the step, min-SNR-5 weighting, lr 1e-3 (2e-3 was
# for a 3-epoch budget), the EMA over ~2000 steps. Why each choice, with the measurements: docs/performance.md.
CPU_PROFILE = "cpu"  # what `--profile auto` trains without a GPU
PROFILES = {
    "full": DDPMConfig(profile="full"),
    "quick": DDPMConfig(profile="quick", model=UNetConfig("16-32-64-128", 64),
                        train=DDPMTrainConfig(epochs=3, batch_size=64, lr=2e-3, warmup_steps=200,
                                              ema_decay=0.995, amp=False)),
    "cpu": DDPMConfig(profile="cpu", model=UNetConfig("16-32-64-128", 64),
                      train=DDPMTrainConfig(epochs=25, batch_size=64, lr=1e-3, warmup_steps=500, ema_decay=0.9995,
                                            amp=False, amp_cpu=True, loss="min_snr", snr_gamma=5.0)),
}


def auto_profile(gpu: bool) -> str:
    """The profile 'auto' stands for: full where a CUDA GPU trains, else the CPU one."""
    return "full" if gpu else CPU_PROFILE


def profile_config(name: str, overrides: dict | None = None) -> DDPMConfig:
    """The config of profile `name` with dotted-key overrides ({"train.epochs": 3}), validated."""
    if name not in PROFILES:
        raise VaelabError(f"unknown profile {name!r}: choose {', '.join(PROFILES)}")
    return with_overrides(PROFILES[name], overrides or {}).validate()

