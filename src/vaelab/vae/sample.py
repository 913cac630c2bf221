"""Sampling from and encoding with a trained VAE: z ~ N(0, I) decoded, and the posterior q(z|x) of images.

The DDPM's counterpart is diffusion/sample.py. Every function takes the network and float images in [0, 1]
on its device; noise comes from seeded CPU generators, so a seed gives the same images on any device.
"""

from __future__ import annotations

import torch

from vaelab.vae.networks import VAE


@torch.no_grad()
def encode_mu(model: VAE, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """Posterior means (N, D) of images x (N, 1, 28, 28)."""
    return torch.cat([model.encode(x[i:i + batch])[0] for i in range(0, len(x), batch)])


@torch.no_grad()
def vae_samples(model: VAE, n: int, seed: int = 0, batch: int = 2000) -> torch.Tensor:
    """n generated images (n, 1, 28, 28): pixel means sigmoid(decoder(z)) of z ~ N(0, I), seeded."""
    device = next(model.parameters()).device
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))  # CPU: same on any device
    return torch.cat([model.decode(z[i:i + batch].to(device)).cpu() for i in range(0, n, batch)])


@torch.no_grad()
def encode_logvar(model: VAE, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """Posterior log-variances (N, D) of images x (N, 1, 28, 28)."""
    return torch.cat([model.encode(x[i:i + batch])[1] for i in range(0, len(x), batch)])
