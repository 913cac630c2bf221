"""Representations of images as features for probing: what each model computes from an image, the probe protocol,
and interpolation paths measured.

Representations (each (N, F) per image):
  VAE   the posterior mean mu(x), and one z ~ q(z|x);
  DDPM  the UNet's blocks at a noise level t: x0 is noised to x_t = add_noise(x0, t, eps) and each block's
        output is averaged over height and width. The bottleneck is "h-space" (Kwon et al. 2023); the
        decoder blocks at small t are the features of DDAE (Xiang et al. 2023).
The probe protocol is one for all: latent.linear_probe (multinomial logistic regression, full-batch L-BFGS
from zeros, 100 iterations, standardised features) and latent.knn_accuracy (k = 5), fitted on a train
subset drawn by each probe seed and scored on the same test images; mean and spread over the seeds.
Interpolation paths are measured in the reference classifier's features (path_metrics).
"""

from __future__ import annotations

import math
import statistics

import torch

from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.diffusion.networks import UNet
from vaelab.metrics.latent import knn_accuracy, linear_probe, silhouette
from vaelab.metrics.structure import path_metrics  # noqa: F401  (re-exported: represent.path_metrics)
from vaelab.vae.networks import VAE

PROBE_SEEDS = (0, 1, 2)
KNN_K = 5


def unet_blocks(model: UNet) -> list[str]:
    """Names of the UNet blocks whose outputs are read: enc1.., bottleneck (h-space), dec1.. (DDAE)."""
    levels = range(1, model.levels + 1)
    return [*(f"enc{i}" for i in levels), "bottleneck", *(f"dec{j}" for j in levels)]


@torch.no_grad()
def unet_features(model: UNet, schedule: NoiseSchedule, x0: torch.Tensor, t: int, seed: int,
                  blocks: list[str] | None = None, batch: int = 500) -> dict[str, torch.Tensor]:
    """Block -> globally averaged output (N, C) of the UNet on x_t, x0 (N, 1, 28, 28) in [-1, 1] noised to step t."""
    blocks = blocks or unet_blocks(model)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed * 100003 + t)  # the noise of (seed, t): the same whatever the grid
    eps = torch.randn(x0.shape, generator=g)  # (N, 1, 28, 28), drawn on the CPU: the same on any device
    seen: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    hooks = [getattr(model, b).register_forward_hook(
        lambda mod, inp, out, b=b: seen[b].append(out.float().mean((2, 3)).cpu())) for b in blocks]
    try:
        for i in range(0, len(x0), batch):
            xb, eb = x0[i:i + batch].to(device), eps[i:i + batch].to(device)
            tb = torch.full((len(xb),), t, device=device, dtype=torch.long)  # (B,)
            model(schedule.add_noise(xb, tb, eb), tb)
    finally:
        for h in hooks:
            h.remove()
    return {b: torch.cat(v) for b, v in seen.items()}


@torch.no_grad()
def vae_latents(model: VAE, x: torch.Tensor, seed: int, batch: int = 2000) -> dict[str, torch.Tensor]:
    """{'mu': posterior means (N, D), 'z': one z ~ q(z|x) each (N, D)} of images x (N, 1, 28, 28) in [0, 1]."""
    device = next(model.parameters()).device
    mus, logvars = zip(*(model.encode(x[i:i + batch].to(device)) for i in range(0, len(x), batch)))
    mu, logvar = torch.cat(mus).cpu(), torch.cat(logvars).cpu()
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
    return {"mu": mu, "z": mu + (0.5 * logvar).exp() * noise}


def spread(values: list[float]) -> float:
    """Standard deviation over probe seeds (0 with one)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, n_train: int,
          seeds=PROBE_SEEDS, num_classes: int = 10) -> dict:
    """Linear-probe and k-NN test accuracy (mean, spread over seeds: each draws n_train of the train pool), silhouette."""
    if n_train > len(train_f):
        raise ValueError(f"n_train {n_train} exceeds the {len(train_f)} training features")
    lin, knn = [], []
    for seed in seeds:
        idx = torch.randperm(len(train_f), generator=torch.Generator().manual_seed(seed))[:n_train]
        lin.append(linear_probe(train_f[idx], train_y[idx], test_f, test_y, num_classes=num_classes))
        knn.append(knn_accuracy(train_f[idx], train_y[idx], test_f, test_y, KNN_K, num_classes=num_classes))
    return {"linear_probe": statistics.fmean(lin), "linear_probe_spread": spread(lin), "knn": statistics.fmean(knn),
            "knn_spread": spread(knn), "silhouette": silhouette(test_f, test_y), "features": int(train_f.shape[1]),
            "train": n_train, "test": len(test_f), "seeds": list(seeds)}


def slerp(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a (D,) and b (D,) at fractions r (S, 1) -> (S, D)."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    if float(omega) < 1e-6:  # parallel: slerp is lerp
        return (1 - r) * a + r * b
    return (torch.sin((1 - r) * omega) * a + torch.sin(r * omega) * b) / math.sin(float(omega))
