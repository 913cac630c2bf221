"""The configuration of a VAE run (saved as config.json): which dataset, which model, how it is trained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vaelab.config import check_device, check_divergence
from vaelab.data import registry
from vaelab.errors import VaelabError
from vaelab.vae.archs import check_arch

# p(x|z) of the loss (vae/loss.py's LIKELIHOODS has one function per name): bernoulli on grey levels is the
# report's; binarized is Bernoulli on dynamically binarised images (it sets binarize); discretized_logistic is a
# normalised likelihood of the 8-bit pixels
LIKELIHOOD_NAMES = ("bernoulli", "binarized", "discretized_logistic")


@dataclass(frozen=True)
class VAEModelConfig:
    """Which VAE: family (dense or conv), architecture name, latent size."""

    family: Literal["dense", "conv"] = "conv"
    arch: str = "32-64-128"
    latent_dim: int = 10

    def validate(self) -> None:
        """Raise VaelabError when the architecture or latent size is impossible."""
        if self.latent_dim < 1:
            raise VaelabError(f"latent_dim must be >= 1 (got {self.latent_dim})")
        check_arch(self.family, self.arch, self.latent_dim)


@dataclass(frozen=True)
class VAETrainConfig:
    """Optimisation and data settings of a VAE run."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    device: str = "auto"
    binarize: bool = False  # dynamic binarisation (Burda et al. 2015): x ~ Bernoulli(intensity) each epoch
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward (weights, loss, Adam stay fp32)
    likelihood: str = "bernoulli"  # one of LIKELIHOOD_NAMES; configs written before it are the report's bernoulli
    divergence_factor: float = 3.0  # an epoch whose training loss is above this times the best epoch's has
    # diverged (0: off; engine/loop.py)
    on_divergence: str = "stop"  # "stop" (exit code 5, the last good checkpoint kept) or "rollback"

    def __post_init__(self):
        if self.likelihood == "binarized" and not self.binarize:  # the binarized protocol is the binarised data
            object.__setattr__(self, "binarize", True)

    def validate(self) -> None:
        """Raise VaelabError when an option is out of range."""
        if self.epochs < 1:
            raise VaelabError(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise VaelabError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise VaelabError(f"lr must be a positive finite number (got {self.lr})")
        if not self.beta >= 0 or self.beta == float("inf"):
            raise VaelabError(f"beta must be a finite number >= 0 (got {self.beta})")
        if self.seed < 0:
            raise VaelabError(f"seed must be >= 0 (got {self.seed})")
        check_device(self.device)
        check_divergence(self.divergence_factor, self.on_divergence)
        if self.likelihood not in LIKELIHOOD_NAMES:
            raise VaelabError(f"unknown likelihood {self.likelihood!r}: choose {', '.join(LIKELIHOOD_NAMES)}")
        if self.likelihood == "discretized_logistic" and self.binarize:
            raise VaelabError("the discretized_logistic likelihood is for the 8-bit images: it cannot train on "
                              "binarised ones (binarize)")


@dataclass(frozen=True)
class VAEConfig:
    """Everything that defines a VAE run; saved as config.json."""

    kind: Literal["vae"] = "vae"
    dataset: str = registry.DEFAULT  # a name of the dataset registry; runs written before it existed are MNIST
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def validate(self) -> "VAEConfig":
        """Validate every part; return self so calls chain."""
        registry.get(self.dataset)
        self.model.validate()
        self.train.validate()
        return self
