"""The DDPM's training loss: the squared error of the predicted noise, per step t weighted or not.

Ho et al. 2020's L_simple is || eps - eps_theta(x_t, t) ||^2 averaged over pixels (the annex's F.mse_loss);
min-SNR-gamma (Hang et al. 2023) weights step t by min(SNR_t, gamma) / SNR_t for eps prediction, with
SNR_t = alpha_bar_t / (1 - alpha_bar_t). The VAE's counterpart is vae/loss.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaelab.diffusion.schedule import NoiseSchedule

def loss_weights(schedule: NoiseSchedule, loss: str, gamma: float) -> torch.Tensor | None:
    """Per-step weights w_t (T,) of the eps loss: None for L_simple; min(SNR_t, gamma) / SNR_t for min_snr."""
    if loss == "simple":
        return None
    ab = torch.cumprod(1 - schedule.betas.double(), 0)  # not the float32 alpha_bar: 1 - ab_0 = 1e-4 needs float64
    snr = ab / (1 - ab)  # (T,)
    return (snr.clamp(max=gamma) / snr).float()


def eps_sse(pred: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The summed squared error of predicted noise (B, 1, 28, 28), each image weighted by weights[t] (None: 1)."""
    if weights is None:
        return F.mse_loss(pred.float(), eps, reduction="sum")
    return (F.mse_loss(pred.float(), eps, reduction="none") * weights[t].view(-1, 1, 1, 1)).sum()
