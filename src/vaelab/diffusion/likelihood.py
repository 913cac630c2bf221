"""The DDPM's variational bound on -log p(x0) of 8-bit images, in nats per image and bits per dimension.

Ho et al. 2020 (eq. 5, and their code's calc_bpd_loop), Nichol & Dhariwal 2021; steps 0-based as in
schedule.py, x0 the 8-bit image scaled to [-1, 1] (to_signed), D = its number of pixels:
  prior  KL(q(x_{T-1} | x0) || N(0, I)), closed form;
  L_t    t = 1 .. T-1: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) at one x_t ~ q(x_t | x0). p's mean is the
         ddpm sampler's (the posterior mean at x0_hat = predict_x0(x_t, t, eps_hat), x0_hat not clipped); its
         variance is a choice: beta_t (variance="beta", the default: the ddpm sampler's sigma^2 here, and Ho et
         al.'s "fixedlarge" of their CIFAR-10 bound) or beta~_t, the posterior variance ("posterior"; then the KL
         is c0_t^2 (1 - ab_t) / ab_t |eps - eps_hat|^2 / (2 beta~_t)). beta~ is best for a point-mass x0, beta
         for broad data (tests/test_ddpm_likelihood.py compares both on a quantised Gaussian);
  L_0    -log p(x0 | x_1 at t = 0): a discretized Gaussian, mean x0_hat, variance beta~_1 (Ho et al.'s code, for
         both variances), bins of width 2/255 centred on the 256 grey levels, the two edge bins open.
The bound is their sum, nats per image; bits/dim = nats / (D ln 2). The network runs in float32 (no autocast):
the weights of small t are about 1 / beta~_t, so float16 eps would inflate them.

Exact: all T terms, T network evaluations per image (batched over t). Estimate: the prior and L_0 exactly, and
K of the T-1 terms L_t, one t drawn uniformly in each of K equal strata of 1 .. T-1 and weighted by its
stratum's size n_k (about (T-1)/K): unbiased for the exact sum, K + 1 evaluations per image, variance
sum_k n_k^2 Var_{t in stratum k}(L_t), below uniform sampling's (T-1)^2 / K Var_t(L_t). The noise of step t of
image i is drawn from a generator seeded by (seed, i, t): the estimate and the exact sum see the same L_t, so
the estimate differs from the exact sum by the choice of t alone; each image's value includes that noise, so an
interval over images (metrics/likelihood.py) includes it too.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from vaelab.diffusion.schedule import NoiseSchedule, gather
from vaelab.errors import VaelabError

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps(x_t, t) -> same shape as x_t
HALF_BIN = 1 / 255  # half the width of a grey level's bin on [-1, 1]
VARIANCES = ("beta", "posterior")  # the first is the default
INDEX_STRIDE = 1_000_003  # noise seeds: (seed * 2^20 + image index) * INDEX_STRIDE + t, distinct for t < this


def bits_per_dim(nats, dims: int):
    """nats per image as bits per dimension: nats / (dims ln 2)."""
    return nats / (dims * math.log(2))


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d < 0, accurate at both ends (Maechler 2012)."""
    d = d.clamp(max=-1e-12)
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def log_normal_bins(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x0) per pixel under N(mean, exp(log_scale)^2), x0 on the 256-level grid of [-1, 1]."""
    x0, mean, inv = x0.double(), mean.double(), torch.exp(-log_scale.double())
    lo, hi = (x0 - mean - HALF_BIN) * inv, (x0 - mean + HALF_BIN) * inv
    ndtr = torch.special.log_ndtr
    flip = lo > 0  # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi): keep both arguments where Phi is not close to 1
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    middle = ndtr(b) + log1mexp(ndtr(a) - ndtr(b))
    return torch.where(x0 < -1 + HALF_BIN, ndtr(hi), torch.where(x0 > 1 - HALF_BIN, ndtr(-lo), middle))


def decoder_nll(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """L_0: -log of the discretized Gaussian decoder, summed over pixels: (B, ...) -> (B,) float64."""
    return -log_normal_bins(x0, mean, log_scale).flatten(1).sum(1)


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_{T-1} | x0) || N(0, I)) summed over pixels: (B, ...) -> (B,) float64."""
    ab = float(alpha_bar64(schedule)[-1])
    m2 = ab * x0.double().pow(2)
    return (0.5 * (-math.log(1 - ab) + (1 - ab) + m2 - 1)).flatten(1).sum(1)


def alpha_bar64(schedule: NoiseSchedule) -> torch.Tensor:
    """alpha_bar (T,) in float64, recomputed from the betas (1 - alpha_bar at small t needs it)."""
    return torch.cumprod(1 - schedule.betas.double(), 0)


def kl_tables(schedule: NoiseSchedule, variance: str = "beta") -> tuple[torch.Tensor, torch.Tensor]:
    """(w, c) float64 (T,): L_t = w_t |eps - eps_hat|^2 + c_t D for t >= 1 (entries at t = 0 unused, set 0)."""
    if variance not in VARIANCES:
        raise VaelabError(f"unknown reverse variance {variance!r}: choose {' or '.join(VARIANCES)}")
    b = schedule.betas.double().cpu()
    ab = alpha_bar64(schedule).cpu()
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    post_var = b * (1 - ab_prev) / (1 - ab)  # beta~_t
    c0 = b * ab_prev.sqrt() / (1 - ab)  # mean_q - mean_p = c0 (x0 - x0_hat) = c0 sqrt((1 - ab) / ab) (eps_hat - eps)
    sq = c0.pow(2) * (1 - ab) / ab  # |mean_q - mean_p|^2 = sq |eps - eps_hat|^2
    var = post_var if variance == "posterior" else b
    w = sq / (2 * var)
    c = 0.5 * (torch.log(var / post_var) + post_var / var - 1)  # 0 for the posterior variance
    w[0], c[0] = 0.0, 0.0
    return w.to(schedule.betas.device), c.to(schedule.betas.device)


def step_noise(shape: tuple[int, ...], seed: int, index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise (B, *shape) of image index[i] at step t[i]: from a CPU generator seeded by (seed, index, t)."""
    out = torch.empty(len(t), *shape)
    for i, (n, s) in enumerate(zip(index.tolist(), t.tolist())):
        g = torch.Generator().manual_seed((seed * 2**20 + n) * INDEX_STRIDE + s)
        out[i] = torch.randn(shape, generator=g)
    return out


def step_terms(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
               noise: torch.Tensor, variance: str = "beta") -> torch.Tensor:
    """The bound's term of each image at its step t (B,): L_t for t >= 1, L_0 (the decoder) at t = 0; float64."""
    x_t = schedule.add_noise(x0, t, noise)
    eps_hat = eps_model(x_t, t).float()
    w, c = kl_tables(schedule, variance)
    dims = x0[0].numel()
    kl = w[t] * (noise - eps_hat).double().pow(2).flatten(1).sum(1) + c[t] * dims
    is0 = t == 0
    if not is0.any():
        return kl
    x0_hat = schedule.predict_x0(x_t[is0], t[is0], eps_hat[is0])  # the posterior mean at t = 0 (c0 = 1, ct = 0)
    log_scale = 0.5 * torch.log(schedule.posterior_var[1].double())  # beta~_1, Ho et al.'s decoder variance
    out = kl.clone()
    out[is0] = decoder_nll(x0[is0], x0_hat, log_scale.expand(x0_hat.shape))
    return out


def check_grid(x0: torch.Tensor) -> None:
    """VaelabError unless x0 holds 8-bit grey levels scaled to [-1, 1] (the bound is for discrete images)."""
    levels = (x0.double() + 1) * 127.5
    if (levels - levels.round()).abs().max() > 1e-3 or x0.min() < -1 or x0.max() > 1:
        raise VaelabError("the DDPM's bound is for 8-bit images scaled to [-1, 1] (to_signed of uint8 pixels)")


@torch.no_grad()
def terms_at(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, steps: torch.Tensor,
             seed: int = 0, first: int = 0, variance: str = "beta", batch: int = 256) -> torch.Tensor:
    """Terms (B, S) of images x0 (B, ...) at steps (B, S) (L_0 at t = 0), image i numbered first + i for its noise."""
    check_grid(x0)
    b, s = steps.shape
    flat_t = steps.reshape(-1).to(x0.device)
    flat_i = torch.arange(b, device=x0.device).repeat_interleave(s)
    out = []
    for j in range(0, len(flat_t), batch):
        t, i = flat_t[j:j + batch], flat_i[j:j + batch]
        noise = step_noise(tuple(x0.shape[1:]), seed, (i + first).cpu(), t.cpu()).to(x0.device)
        out.append(step_terms(eps_model, schedule, x0[i], t, noise, variance))
    return torch.cat(out).view(b, s)


def exact_terms(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, seed: int = 0, first: int = 0,
                variance: str = "beta", batch: int = 256) -> torch.Tensor:
    """(B, T + 1) float64: L_0 .. L_{T-1} and the prior, per image; their row sums are the exact bound."""
    steps = torch.arange(schedule.T).expand(len(x0), -1)
    terms = terms_at(eps_model, schedule, x0, steps, seed, first, variance, batch)
    return torch.cat([terms, prior_kl(schedule, x0).unsqueeze(1)], 1)


def strata(T: int, k: int) -> torch.Tensor:
    """K + 1 boundaries of K near-equal strata of the steps 1 .. T-1."""
    if not 1 <= k <= T - 1:
        raise VaelabError(f"the number of sampled steps must be between 1 and {T - 1} (got {k})")
    return torch.linspace(1, T, k + 1).round().long()


def sampled_steps(T: int, k: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps (n, K), weights (K,)): one step drawn uniformly in each stratum of 1 .. T-1, weighted by its size."""
    edges = strata(T, k)
    sizes = edges[1:] - edges[:-1]  # (K,)
    u = torch.rand(n, k, generator=generator, dtype=torch.float64)
    return edges[:-1] + (u * sizes).long().clamp(max=sizes - 1), sizes.double()


def estimated_bound(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, k: int, seed: int = 0,
                    first: int = 0, variance: str = "beta", batch: int = 256, draw: int = 0) -> torch.Tensor:
    """(B,) float64 unbiased estimate of the bound per image: prior and L_0 exact, K stratified steps of the rest.

    `draw` numbers the draw of the steps: the noise of (image, t) depends on seed alone, so draws differ in t only.
    """
    g = torch.Generator().manual_seed((seed * 2**20 + first) * 1009 + draw)  # seeded by (seed, first image, draw)

    steps, weights = sampled_steps(schedule.T, k, len(x0), g)
    steps = torch.cat([torch.zeros(len(x0), 1, dtype=torch.long), steps], 1)  # L_0 always
    terms = terms_at(eps_model, schedule, x0, steps, seed, first, variance, batch)
    weights = torch.cat([torch.ones(1, dtype=torch.float64), weights]).to(terms.device)
    return (terms * weights).sum(1) + prior_kl(schedule, x0).to(terms.device)


def image_bounds(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, k: int | None = None,
                 seed: int = 0, variance: str = "beta", images_per_call: int = 64,
                 batch: int = 256) -> torch.Tensor:
    """The bound per image (N,) in nats, float64 on the CPU: exact (all T steps) when k is None, else estimated."""
    out = []
    for i in range(0, len(x0), images_per_call):
        xb = x0[i:i + images_per_call]
        if k is None:
            out.append(exact_terms(eps_model, schedule, xb, seed, i, variance, batch).sum(1).cpu())
        else:
            out.append(estimated_bound(eps_model, schedule, xb, k, seed, i, variance, batch).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def step_means(eps_model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, seed: int = 0,
               variance: str = "beta") -> torch.Tensor:
    """(T + 1,) mean over images of L_0 .. L_{T-1} and the prior: where the bound's nats come from."""
    return exact_terms(eps_model, schedule, x0, seed, 0, variance).mean(0)
