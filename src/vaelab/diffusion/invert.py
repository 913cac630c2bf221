"""DDIM inversion (Song et al. 2021, section 5.4): an image x0 -> the noise x_T that DDIM (eta 0) maps back to it.

The deterministic DDIM update is the Euler step of an ODE, so it can be run forward: over the same S
steps that sampling visits, in increasing order, x_{t_next} = sqrt(alpha_bar_next) x0_hat + sqrt(1 -
alpha_bar_next) eps, with x0_hat = predict_x0(x_t, t, eps). The sampling step t_next -> t used
eps(x_{t_next}, t_next), which is not known yet; inversion uses eps(x_t, t_next) instead (the network at
the step being undone, on the point at hand), so x0 -> x_T -> x0 is exact only as S grows. This is not a
sampler: it draws no noise and sample_loop stays the one loop that generates images.
"""

from __future__ import annotations

import torch

from vaelab.diffusion.sample import EpsModel
from vaelab.diffusion.schedule import NoiseSchedule, gather, sampler_named


def inversion_steps(T: int, steps: int | None) -> list[tuple[int, int]]:
    """(t, t_next) pairs that undo DDIM's `steps` sampling steps, in increasing order; t = -1 is x0."""
    ts = sampler_named("ddim").timesteps(T, steps)[::-1]  # 0 .. T-1, the sampler's own steps
    return list(zip([-1, *ts[:-1]], ts))


def ddim_forward_step(s: NoiseSchedule, eps: torch.Tensor, t: int, t_next: int, x_t: torch.Tensor) -> torch.Tensor:
    """One inverted DDIM step x_t -> x_{t_next} (t < t_next) given eps; t = -1 means x_t is x0 (alpha_bar 1)."""
    if t >= 0:
        x0_hat = s.predict_x0(x_t, torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long), eps)
    else:
        x0_hat = x_t
    ab_next = gather(s.alpha_bar, torch.full((len(x_t),), t_next, device=x_t.device, dtype=torch.long))
    return ab_next.sqrt() * x0_hat + (1 - ab_next).sqrt() * eps


@torch.no_grad()
def ddim_invert(schedule: NoiseSchedule, eps_model: EpsModel, x0: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """x0 (B, 1, 28, 28) in [-1, 1] -> x_T (B, 1, 28, 28) by the DDIM update run forward over `steps` steps."""
    x = x0
    for t, t_next in inversion_steps(schedule.T, steps):
        t_batch = torch.full((len(x),), t_next, device=x.device, dtype=torch.long)  # (B,)
        eps = eps_model(x, t_batch).float()  # (B, 1, 28, 28)
        x = ddim_forward_step(schedule, eps, t, t_next, x)
    return x
