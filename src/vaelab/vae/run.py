"""Opening a trained VAE run folder: its config, history and model with the saved weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.engine import checkpoint
from vaelab.engine.runs import pick_device, trained_config
from vaelab.vae.config import VAEConfig
from vaelab.vae.networks import VAE, build_vae


@dataclass
class VAERun:
    """An opened VAE run folder: its config, history and trained model."""

    path: Path
    cfg: VAEConfig
    model: VAE
    history: list[dict]
    device: torch.device


def open_vae(run_dir, device: str = "auto") -> VAERun:
    """Open a trained VAE run: validate config.json, rebuild the model, load and check its weights."""
    run_dir = Path(run_dir)
    cfg = trained_config(run_dir, "vae", VAEConfig)
    dev = pick_device(device)
    model = build_vae(cfg.model.family, cfg.model.arch, cfg.model.latent_dim)
    model.load_state_dict(checkpoint.load_weights(run_dir / checkpoint.WEIGHTS, model.state_dict()))
    history = checkpoint.load_state(run_dir).get("history", [])
    return VAERun(run_dir, cfg, model.to(dev).eval(), history, dev)
