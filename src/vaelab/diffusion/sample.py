"""Sampling from a DDPM: the one loop that calls the eps-network, and the API on top of it.

sample_loop is the pipeline of diffusers: at each visited step it evaluates eps = eps_model(x_t, t) once
and hands it to the sampler's step rule (vaelab.diffusion.schedule), which is arithmetic only. DDIM
inversion (image to noise) would be this same loop run forward, over the steps in increasing order.
All noise is drawn from generators seeded by `seed`, so images are the same each time on one device.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from vaelab.diffusion.schedule import NoiseSchedule, sampler_named
from vaelab.diffusion.run import DDPMRun

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps(x_t (B, C, H, W), t (B,)) -> (B, C, H, W)


@torch.no_grad()
def sample_loop(schedule: NoiseSchedule, eps_model: EpsModel, x_T: torch.Tensor, sampler: str = "ddpm",
                steps: int | None = None, eta: float | None = None, generator: torch.Generator | None = None,
                keep: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run the reverse process from noise x_T (B, 1, 28, 28) to images in [-1, 1]; keep(t, x) sees each x_t.

    steps and eta default to the sampler's own (ddpm: all T; ddim: 50 steps, eta 0); ddpm has no eta
    and ignores it. The state after the last step is x0, which keep sees as t = -1.
    """
    smp = sampler_named(sampler)
    ts = smp.timesteps(schedule.T, steps)
    options = smp.options(eta)
    x = x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)  # (B,)
        eps = eps_model(x, t_batch).float()  # (B, 1, 28, 28); float32 even from a float16 autocast network
        x = smp.step(schedule, eps, t, t_prev, x, generator=generator, **options)
        if keep is not None:
            keep(t_prev, x)
    return x.clamp(-1, 1)  # as the annex: clip only the final image


def sampler_label(sampler: str, steps: int | None, T: int, eta: float | None) -> str:
    """'DDPM 1000 steps' or 'DDIM 50 steps, eta 0' for titles and file names."""
    smp = sampler_named(sampler)
    n = len(smp.timesteps(T, steps))
    options = smp.options(eta)
    return f"{sampler.upper()} {n} steps" + (f", eta {options['eta']:g}" if "eta" in options else "")


def eps_model(model: torch.nn.Module, device: torch.device, amp: bool = True) -> EpsModel:
    """model as eps(x_t, t); with amp, under float16 autocast on CUDA (float32 elsewhere)."""
    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # float16, not bfloat16: 3 more mantissa bits in eps, which x0_hat divides by sqrt(alpha_bar)
        with torch.autocast(device.type, torch.float16, enabled=amp and device.type == "cuda"):
            return model(x_t, t)
    return eps


@torch.no_grad()
def sample_images(model, schedule: NoiseSchedule, n: int, device: torch.device, sampler: str = "ddim",
                  steps: int | None = None, eta: float | None = None, seed: int = 0, keep=None,
                  amp: bool = True) -> torch.Tensor:
    """n images (n, 1, 28, 28) in [-1, 1] from the reverse process, on `device`."""
    g = torch.Generator(device=device).manual_seed(seed)
    x_T = torch.randn((n, 1, 28, 28), generator=g, device=device)
    return sample_loop(schedule, eps_model(model, device, amp), x_T, sampler, steps, eta, g, keep)


def generate(run: DDPMRun, n: int, sampler: str = "ddim", steps: int | None = None, eta: float | None = None,
             seed: int = 0, batch: int = 500) -> tuple[torch.Tensor, float]:
    """n generated images (n, 1, 28, 28) float32 in [0, 1] on the CPU, and the images per second measured.

    steps/eta None: the sampler's defaults (ddpm all T; ddim 50 steps, eta 0). Batch b draws its noise
    from seed + b * batch, so the images depend on (seed, batch) and not on n.
    """
    sampler_named(sampler).timesteps(run.schedule.T, steps)  # refuse impossible steps before any work
    out, t0 = [], time.perf_counter()
    for i in range(0, n, batch):
        x = sample_images(run.model, run.schedule, min(batch, n - i), run.device, sampler, steps, eta, seed + i,
                          amp=run.cfg.train.amp)
        out.append(((x + 1) / 2).float().cpu())  # .cpu() waits for the device: the clock below is honest
    seconds = time.perf_counter() - t0
    return torch.cat(out), n / seconds
