"""Opening a trained DDPM run folder: its config, noise schedule, history and network (EMA weights by default).

The VAE's counterpart is vae/run.py. Sampling and evaluation open runs here and never import training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.diffusion.config import DDPMConfig
from vaelab.diffusion.networks import UNet
from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.engine import checkpoint
from vaelab.engine.runs import pick_device, trained_config

EMA_PREFIX = "ema."  # model.safetensors holds the raw weights and, under this prefix, their moving average


def build_unet(cfg: DDPMConfig) -> UNet:
    """The eps-network described by `cfg`."""
    return UNet(cfg.model.widths, cfg.model.time_dim)


def build_schedule(cfg: DDPMConfig) -> NoiseSchedule:
    """The noise schedule described by `cfg`."""
    s = cfg.schedule
    return NoiseSchedule(s.kind, s.timesteps, s.beta_start, s.beta_end)


def split_weights(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(raw, ema) state_dicts from a checkpoint's tensors."""
    raw = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    return raw, ema


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
