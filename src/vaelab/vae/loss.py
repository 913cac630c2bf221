"""The report's loss (section 2.4): BCE summed over pixels + beta * closed-form KL.

Terms are returned per image (summed over pixels or latent dimensions, averaged over the batch),
so that numbers read as nats per image whatever the batch size. The likelihood p(x|z) is a parameter
(LIKELIHOODS; Bernoulli pixels, as the report) and so is beta: every caller that needs -log p(x|z),
training, the stacked betas and the IWAE bound, goes through `neg_log_px`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


LIKELIHOODS = {"bernoulli": bernoulli_nll}  # name -> per-pixel negative log-likelihood


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


def elbo_terms(logits, x, mu, logvar, beta: float = 1.0) -> ELBOTerms:
    """The beta-weighted VAE loss and its parts, each a per-image mean over the batch."""
    recon = bce_per_image(logits, x).mean()
    kl = kl_per_image(mu, logvar).mean()
    return ELBOTerms(recon + beta * kl, recon, kl)


def stacked_elbo_terms(logits, x, mu, logvar, betas: torch.Tensor) -> ELBOTerms:
    """elbo_terms for K models at once on one batch: logits (K, B, 1, 28, 28), x (B, 1, 28, 28),
    mu/logvar (K, B, D), betas (K,) -> per-model per-image means, each (K,)."""
    recon = neg_log_px(logits, x, batch_dims=2)  # (K, B)
    kl = kl_per_dim(mu, logvar).sum(2)  # (K, B)
    recon, kl = recon.mean(1), kl.mean(1)
    return ELBOTerms(recon + betas * kl, recon, kl)
