"""The report's loss (section 2.4): BCE summed over pixels + beta * closed-form KL.

Terms are returned per image (summed over pixels or latent dimensions, averaged over the batch),
so that numbers read as nats per image whatever the batch size. The likelihood p(x|z) is a parameter
(LIKELIHOODS) and so is beta: every caller that needs -log p(x|z), training, the stacked betas and the
IWAE bound, goes through `neg_log_px`. The likelihoods, and the protocol their nats belong to (PROTOCOLS):
  bernoulli             the report's: grey levels in [0, 1] as Bernoulli targets. Not a normalised likelihood
                        of 8-bit images (protocol bernoulli-grey): its nats compare with nothing published.
  binarized             the same Bernoulli on dynamically binarised images (Burda et al. 2015; protocol
                        binarized): the VAE literature's MNIST nats.
  discretized_logistic  a normalised likelihood of the 8-bit pixels (protocol discretized-8bit): the pixel's
                        grey level falls in one of 256 bins of width 2/255 on [-1, 1] (the edge bins open) under
                        a logistic, so -ELBO and IWAE bound -log p(x) in the DDPM bound's units. The report's
                        networks have one output per pixel, kept: the location is the pixel mean
                        2 sigmoid(logit) - 1 and the scale a fixed function of it, LOGISTIC_SCALES[0] grey
                        levels at black or white rising to LOGISTIC_SCALES[1] at mid-grey (MNIST's pixels are
                        mostly exactly black; its uncertain ones are grey). A learned scale needs a second
                        output channel per pixel (vae/networks.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F

LOGISTIC_SCALES = (0.25, 16.0)  # the logistic's scale in grey levels at a black/white and at a mid-grey location
PROTOCOLS = {"bernoulli": "bernoulli-grey", "binarized": "binarized", "discretized_logistic": "discretized-8bit"}

@dataclass
class ELBOTerms:
    """Per-image means over the batch: loss = recon + beta * kl; neg_elbo = recon + kl."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor

    @property
    def neg_elbo(self) -> torch.Tensor:
        """-ELBO per image (beta = 1), whatever beta was trained with."""
        return self.recon + self.kl


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per pixel for Bernoulli pixels with these logits (x in [0, 1]): same shape as logits."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d < 0, accurate at both ends; each branch sees only inputs safe for its gradient."""
    d = d.clamp(max=-1e-12)
    near = d > -math.log(2)
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, d, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near, -1.0, d))))


def logistic_scale(m: torch.Tensor) -> torch.Tensor:
    """The scale on [-1, 1] of the logistic at pixel mean m in [0, 1]: LOGISTIC_SCALES between edge and mid-grey."""
    edge, mid = LOGISTIC_SCALES
    return (edge + (mid - edge) * 4 * m * (1 - m)) * (2 / 255)


def discretized_logistic_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log P(x's 8-bit bin) per pixel (x = grey level / 255) under the logistic of the decoder's logits.

    Computed in float64 (bins 1/255 wide under scales down to a quarter of that), returned in the logits' dtype.
    """
    m = torch.sigmoid(logits.double())
    xs = (x.double().expand_as(m) * 255).round() / 127.5 - 1  # the grey level on [-1, 1]
    inv = 1 / logistic_scale(m)
    centred = xs - (2 * m - 1)
    lo, hi = (centred - 1 / 255) * inv, (centred + 1 / 255) * inv
    flip = lo > 0  # F(hi) - F(lo) = F(-lo) - F(-hi): keep both arguments where F is not close to 1
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    middle = F.logsigmoid(b) + log1mexp(F.logsigmoid(a) - F.logsigmoid(b))
    log_p = torch.where(xs < -1 + 1 / 255, F.logsigmoid(hi), torch.where(xs > 1 - 1 / 255, F.logsigmoid(-lo), middle))
    return (-log_p).to(logits.dtype)


# name -> per-pixel negative log-likelihood -log p(x|z) from the decoder's logits
LIKELIHOODS = {"bernoulli": bernoulli_nll, "binarized": bernoulli_nll, "discretized_logistic": discretized_logistic_nll}


def protocol(likelihood: str, binarize: bool) -> str:
    """The protocol of a run's likelihood numbers: bernoulli on binarised images (older runs) is binarized."""
    return "binarized" if binarize and likelihood == "bernoulli" else PROTOCOLS[likelihood]


def neg_log_px(logits: torch.Tensor, x: torch.Tensor, batch_dims: int = 1,
               likelihood: str = "bernoulli") -> torch.Tensor:
    """-log p(x|z) summed over pixels: logits (*batch, C, H, W), x broadcastable to it -> (*batch,)."""
    return LIKELIHOODS[likelihood](logits, x).flatten(batch_dims).sum(batch_dims)


def bce_per_image(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for Bernoulli pixels, summed over pixels: (B, ...) -> (B,)."""
    return neg_log_px(logits, x)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, closed form: (B, D) -> (B, D)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) summed over latent dimensions: (B, D) -> (B,)."""
    return kl_per_dim(mu, logvar).sum(1)


def elbo_terms(logits, x, mu, logvar, beta: float = 1.0, likelihood: str = "bernoulli") -> ELBOTerms:
    """The beta-weighted VAE loss and its parts, each a per-image mean over the batch."""
    recon = neg_log_px(logits, x, likelihood=likelihood).mean()
    kl = kl_per_image(mu, logvar).mean()
    return ELBOTerms(recon + beta * kl, recon, kl)


def stacked_elbo_terms(logits, x, mu, logvar, betas: torch.Tensor, likelihood: str = "bernoulli") -> ELBOTerms:
    """elbo_terms for K models at once on one batch: logits (K, B, 1, 28, 28), x (B, 1, 28, 28),
    mu/logvar (K, B, D), betas (K,) -> per-model per-image means, each (K,)."""
    recon = neg_log_px(logits, x, batch_dims=2, likelihood=likelihood)  # (K, B)
    kl = kl_per_dim(mu, logvar).sum(2)  # (K, B)
    recon, kl = recon.mean(1), kl.mean(1)
    return ELBOTerms(recon + betas * kl, recon, kl)
