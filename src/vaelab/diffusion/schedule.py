"""The Gaussian noise process of a DDPM (Ho et al. 2020) and the step rules of two samplers: arithmetic only.

Notation of the papers: x0 a clean image in [-1, 1], x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
with eps ~ N(0, I), t = 0 .. T-1 (0-based as in the report's annex, so alpha_bar_0 = 1 - beta_0).
Nothing here calls a network: a step is handed the network's eps for (x_t, t) and returns x_{t_prev}
(the scheduler of diffusers); the loop that calls the network is vaelab.diffusion.sample.sample_loop.

Samplers:
  ddpm  the annex's ancestral sampler: all T steps, x_{t-1} = mean + sigma_t z with sigma_t^2 = beta_t
        (Ho et al.'s first choice; "posterior" uses beta~_t instead), and the x0 estimate at t = 0.
  ddim  Song et al. 2021: any decreasing subsequence of steps; eta = 0 is deterministic, eta = 1
        over all T steps is the ancestral sampler with the posterior variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from vaelab.errors import VaelabError


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The annex's schedule: beta_t evenly spaced from beta_start to beta_end (float64)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021: alpha_bar follows cos^2, betas clipped at 0.999 (beta_start/end unused)."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # (T + 1,)
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def gather(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v[t] for integer steps t (B,), shaped (B, 1, 1, 1) to broadcast over images."""
    return v[t].view(-1, 1, 1, 1)


class NoiseSchedule:
    """betas, alphas and alpha_bar (computed in float64, stored float32) and the closed forms on them."""

    def __init__(self, kind: str = "linear", T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if kind not in SCHEDULES:
            raise VaelabError(f"unknown noise schedule {kind!r}: choose {', '.join(SCHEDULES)}")
        if T < 2:
            raise VaelabError(f"the number of diffusion steps must be >= 2 (got {T})")
        betas = SCHEDULES[kind](T, beta_start, beta_end)
        if not (betas > 0).all() or not (betas < 1).all():
            raise VaelabError(f"betas must lie in (0, 1) (got {beta_start} .. {beta_end})")
        # cumprod in float64: in float32 alpha_bar_{T-1} (about 4e-5) would carry visible rounding error
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.kind, self.T = kind, T
        as32 = lambda v: v.to(torch.float32)  # noqa: E731
        self.betas, self.alphas, self.alpha_bar = as32(betas), as32(1 - betas), as32(alpha_bar)
        self.alpha_bar_prev = as32(alpha_bar_prev)
        # q(x_{t-1} | x_t, x0) = N(c0 x0 + ct x_t, beta~_t); beta~_0 = 0 since alpha_bar_{-1} = 1
        self.posterior_var = as32(betas * (1 - alpha_bar_prev) / (1 - alpha_bar))
        self.posterior_c0 = as32(betas * alpha_bar_prev.sqrt() / (1 - alpha_bar))
        self.posterior_ct = as32((1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar))

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """Move every table to `device` (in place; returns self)."""
        for name in ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "posterior_var",
                     "posterior_c0", "posterior_ct"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Forward process in one jump: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        ab = gather(self.alpha_bar, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert add_noise for x0 given the noise: (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        ab = gather(self.alpha_bar, t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7); variance shaped (B, 1, 1, 1)."""
        return gather(self.posterior_c0, t) * x0 + gather(self.posterior_ct, t) * x_t, gather(self.posterior_var, t)


def full_steps(T: int, steps: int | None) -> list[int]:
    """The ancestral sampler's steps: all of T-1 .. 0 (it cannot skip; DDIM can)."""
    if steps not in (None, T):
        raise VaelabError(f"the ddpm sampler takes all {T} steps (got --steps {steps}); use --sampler ddim "
                          "for fewer steps")
    return list(range(T - 1, -1, -1))


def spaced_steps(T: int, steps: int | None) -> list[int]:
    """`steps` steps evenly spaced from T-1 down to 0, both included (all T when None)."""
    n = T if steps is None else steps
    if not 1 <= n <= T:
        raise VaelabError(f"the number of sampling steps must be between 1 and {T} (got {n})")
    if n == 1:
        return [T - 1]
    return [round(i * (T - 1) / (n - 1)) for i in range(n - 1, -1, -1)]  # distinct because n <= T


def ddpm_step(s: NoiseSchedule, eps: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
              generator: torch.Generator | None = None, variance: str = "beta") -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} (t_prev = t - 1) given eps; at t = 0 the x0 estimate itself (no noise)."""
    tt = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)  # (B,)
    x0_hat = s.predict_x0(x_t, tt, eps)
    mean, post_var = s.posterior(x0_hat, x_t, tt)  # equals the annex's (x_t - beta eps / sqrt(1 - ab)) / sqrt(alpha)
    if t == 0:
        return mean  # = x0_hat: c0 = 1 and ct = 0 at t = 0
    var = {"beta": gather(s.betas, tt), "posterior": post_var}[variance]  # Ho et al.'s two choices of sigma_t^2
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + var.sqrt() * z


def ddim_step(s: NoiseSchedule, eps: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
              eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} given eps (Song et al. eq. 12); t_prev = -1 means x0 (alpha_bar = 1)."""
    tt = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)  # (B,)
    x0_hat = s.predict_x0(x_t, tt, eps)
    ab = s.alpha_bar[t]
    ab_prev = s.alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), device=x_t.device)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0 and t_prev >= 0:
        x_prev = x_prev + sigma * torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return x_prev


@dataclass(frozen=True)
class Sampler:
    """A sampler: which steps it visits, how it moves from one to the next, and its defaults."""

    steps: Callable[[int, int | None], list[int]]
    step: Callable[..., torch.Tensor]  # step(s, eps, t, t_prev, x_t, generator=..., **options(eta))
    default_steps: int | None  # None: all T
    default_eta: float | None  # None: the step takes no eta (ddpm: its noise is set by `variance`)

    def timesteps(self, T: int, steps: int | None = None) -> list[int]:
        """The steps visited, T-1 first; `steps` None means this sampler's default."""
        return self.steps(T, self.default_steps if steps is None else steps)

    def options(self, eta: float | None = None) -> dict:
        """The keyword arguments of `step` for `eta` (None: the default); {} for a sampler without eta."""
        if self.default_eta is None:
            return {}
        return {"eta": self.default_eta if eta is None else eta}


SAMPLERS = {"ddpm": Sampler(full_steps, ddpm_step, None, None), "ddim": Sampler(spaced_steps, ddim_step, 50, 0.0)}


def sampler_named(name: str) -> Sampler:
    """The sampler called `name`; VaelabError naming the choices otherwise."""
    if name not in SAMPLERS:
        raise VaelabError(f"unknown sampler {name!r}: choose {' or '.join(SAMPLERS)}")
    return SAMPLERS[name]
