"""The report's VAEs (sections 2.1-2.3 and 3.1-3.2): dense and convolutional encoders/decoders.

Decoders return logits; x_hat = sigmoid(logits). The parameters are exactly the report's (its
decoders end in nn.Sigmoid, which has none), and the loss can use the stable, fused
BCE-with-logits instead of log(sigmoid(.)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaelab.errors import VaelabError

# Named architectures of the report's sweeps. Dense: decoder hidden sizes (the encoder mirrors them),
# so "256-512" is encoder 784-512-256 and decoder 256-512-784. Conv: encoder channels.
DENSE_ARCHS = {"128-256": (128, 256), "256-512": (256, 512), "512-1024": (512, 1024)}
CONV_ARCHS = {"32-64": (32, 64), "16-32-64": (16, 32, 64), "32-64-128": (32, 64, 128)}
REPORT_CHOICE = {"dense": ("256-512", 5), "conv": ("32-64-128", 10)}  # (arch, latent) the report settled on
PIXELS = 28 * 28  # a dense VAE's input and output size
MAX_PARAMETERS = 2 * 10**9  # refused above this whatever the machine
TRAINING_BYTES_PER_PARAMETER = 4 * 4  # float32 weights, gradients and Adam's two moments


def parse_dense(arch: str) -> tuple[int, ...]:
    """Hidden sizes of a dense architecture: a named one, or any dash-separated positive integers."""
    if arch in DENSE_ARCHS:
        return DENSE_ARCHS[arch]
    try:
        dims = tuple(int(p) for p in arch.split("-"))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise VaelabError(f"unknown dense architecture {arch!r}: use {', '.join(DENSE_ARCHS)} "
                          "or hidden sizes such as 300-600")
    return dims


def parse_conv(arch: str) -> tuple[int, ...]:
    """Encoder channels of a named conv architecture."""
    if arch not in CONV_ARCHS:
        raise VaelabError(f"unknown conv architecture {arch!r}: choose one of {', '.join(CONV_ARCHS)}")
    return CONV_ARCHS[arch]


def arch_sizes(family: str, arch: str) -> tuple[int, ...]:
    """The layer sizes of `arch` in `family`; VaelabError if either is unknown."""
    if family not in FAMILIES:
        raise VaelabError(f"unknown model family {family!r}: choose {' or '.join(FAMILIES)}")
    return FAMILIES[family][0](arch)


def linear_parameters(n_in: int, n_out: int) -> int:
    """Weights and biases of nn.Linear(n_in, n_out)."""
    return (n_in + 1) * n_out


def conv_parameters(c_in: int, c_out: int, k: int) -> int:
    """Weights and biases of a k x k Conv2d or ConvTranspose2d from c_in to c_out channels."""
    return c_in * c_out * k * k + c_out


def dense_parameters(hidden: tuple[int, ...], latent_dim: int) -> int:
    """Parameters of the dense VAE with decoder hidden sizes `hidden` (the encoder mirrors them)."""
    encoder, decoder = (PIXELS, *hidden[::-1]), (latent_dim, *hidden, PIXELS)
    return (sum(linear_parameters(a, b) for a, b in zip(encoder[:-1], encoder[1:]))
            + 2 * linear_parameters(encoder[-1], latent_dim)
            + sum(linear_parameters(a, b) for a, b in zip(decoder[:-1], decoder[1:])))


def conv_vae_parameters(channels: tuple[int, ...], latent_dim: int) -> int:
    """Parameters of the conv VAE with encoder `channels` (kernels 4, 4 then 3; the decoder mirrors them)."""
    kernels = (4, 4, 3)[:len(channels)]
    c, side = conv_geometry(channels)
    encoder = sum(conv_parameters(a, b, k) for a, b, k in zip((1, *channels[:-1]), channels, kernels))
    decoder = sum(conv_parameters(a, b, k) for a, b, k in zip(channels[::-1], (*channels[-2::-1], 1), kernels[::-1]))
    flat = c * side * side
    return encoder + 2 * linear_parameters(flat, latent_dim) + linear_parameters(latent_dim, flat) + decoder


def estimate_parameters(family: str, arch: str, latent_dim: int) -> int:
    """Trainable parameters of build_vae(family, arch, latent_dim), from the architecture alone (nothing built)."""
    return PARAMETER_COUNTS[family](arch_sizes(family, arch), latent_dim)


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux sysconf), or None where that cannot be read."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def training_limit() -> tuple[int, str]:
    """The most bytes a model may need to train here, and what sets it: the parameter cap or the free memory."""
    cap, memory = MAX_PARAMETERS * TRAINING_BYTES_PER_PARAMETER, available_memory()
    if memory is None or cap <= memory:
        return cap, f"the cap of {MAX_PARAMETERS:,} parameters"
    return memory, "the memory available"


def check_fits(family: str, arch: str, latent_dim: int | None = None) -> None:
    """VaelabError, before anything is built, if the model is too large to train (latent_dim None: at least 1)."""
    parameters = estimate_parameters(family, arch, latent_dim or 1)
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    limit, reason = training_limit()
    if needed > limit:
        at = f" at latent_dim {latent_dim}" if latent_dim else ""
        count = f"{parameters:,}" if latent_dim else f"at least {parameters:,}"
        raise VaelabError(f"{family} architecture {arch}{at} has {count} parameters: training needs {needed:,} "
                          f"bytes (4 each for weights, gradients and two Adam moments), over the limit of "
                          f"{limit:,} bytes ({reason})")


def check_arch(family: str, arch: str, latent_dim: int | None = None) -> tuple[int, ...]:
    """The layer sizes of `arch` in `family`; VaelabError if either is unknown or the model too large to train."""
    sizes = arch_sizes(family, arch)
    check_fits(family, arch, latent_dim)
    return sizes


class DenseEncoder(nn.Module):
    """x (B, 1, 28, 28) -> mu, logvar (B, latent_dim) through ReLU layers (report 2.1)."""

    def __init__(self, latent_dim: int, hidden_dims=(512, 256), input_dim: int = 784):
        super().__init__()
        dims = (input_dim, *hidden_dims)
        self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_mu = nn.Linear(dims[-1], latent_dim)
        self.fc_logvar = nn.Linear(dims[-1], latent_dim)

    def forward(self, x):
        h = x.flatten(1)  # (B, 784)
        for layer in self.fc_layers:
            h = F.relu(layer(h))
        return self.fc_mu(h), self.fc_logvar(h)


class DenseDecoder(nn.Module):
    """z (B, latent_dim) -> logits (B, 1, 28, 28) (report 2.2, without the final sigmoid)."""

    def __init__(self, latent_dim: int, hidden_dims=(256, 512), output_dim: int = 784):
        super().__init__()
        dims = (latent_dim, *hidden_dims)
        self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_out = nn.Linear(dims[-1], output_dim)

    def forward(self, z):
        h = z
        for layer in self.fc_layers:
            h = F.relu(layer(h))
        return self.fc_out(h).view(-1, 1, 28, 28)


def conv_geometry(channels: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of the last feature map: 4x4/stride-2 layers 28->14->7, then a 3x3 valid one 7->5."""
    return channels[-1], (7 if len(channels) == 2 else 5)


class ConvEncoder(nn.Module):
    """x (B, 1, 28, 28) -> mu, logvar (B, latent_dim) (report 3.1, channels configurable)."""

    def __init__(self, latent_dim: int, channels=(32, 64, 128)):
        super().__init__()
        if len(channels) not in (2, 3):
            raise VaelabError("a conv encoder has 2 or 3 layers")
        layers, c_in = [], 1
        for i, c_out in enumerate(channels):
            k, s, p = (4, 2, 1) if i < 2 else (3, 1, 0)
            layers += [nn.Conv2d(c_in, c_out, k, s, p), nn.ReLU()]
            c_in = c_out
        self.conv_layers = nn.Sequential(*layers)
        c, side = conv_geometry(tuple(channels))
        self.fc_mu = nn.Linear(c * side * side, latent_dim)
        self.fc_logvar = nn.Linear(c * side * side, latent_dim)

    def forward(self, x):
        h = self.conv_layers(x).flatten(1)  # (B, C * side * side)
        return self.fc_mu(h), self.fc_logvar(h)


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> logits (B, 1, 28, 28), mirroring ConvEncoder (report 3.2)."""

    def __init__(self, latent_dim: int, channels=(32, 64, 128)):
        super().__init__()
        self.c, self.side = conv_geometry(tuple(channels))
        self.fc = nn.Linear(latent_dim, self.c * self.side * self.side)
        layers, rev = [], list(channels[::-1]) + [1]
        for i, (c_in, c_out) in enumerate(zip(rev[:-1], rev[1:])):
            first_of_three = len(channels) == 3 and i == 0
            k, s, p = (3, 1, 0) if first_of_three else (4, 2, 1)
            layers += [nn.ConvTranspose2d(c_in, c_out, k, s, p), nn.ReLU()]
        self.deconv_layers = nn.Sequential(*layers[:-1])  # no ReLU on the logits

    def forward(self, z):
        h = F.relu(self.fc(z)).view(-1, self.c, self.side, self.side)  # (B, C, side, side)
        return self.deconv_layers(h)  # (B, 1, 28, 28)


@dataclass
class VAEOutput:
    """What a VAE forward returns: Bernoulli logits, posterior parameters and the sample z."""

    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor

    @property
    def x_hat(self) -> torch.Tensor:
        """The reconstruction (pixel means in [0, 1]); computed on demand, the loss needs only logits."""
        return torch.sigmoid(self.logits)


class VAE(nn.Module):
    """Encoder + reparameterisation + decoder (Kingma & Welling 2013; report 2.3)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    @staticmethod
    def reparameterize(mu, logvar):
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I): differentiable in mu and logvar."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def encode(self, x):
        """Posterior parameters (mu, logvar) of q(z|x)."""
        return self.encoder(x)

    def decode_logits(self, z):
        """Bernoulli logits of p(x|z)."""
        return self.decoder(z)

    def decode(self, z):
        """Pixel means in [0, 1] of p(x|z)."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x) -> VAEOutput:
        mu, logvar = self.encoder(x)
        z = self.reparameterize(mu, logvar)
        logits = self.decoder(z)
        return VAEOutput(logits, mu, logvar, z)


# family -> (architecture parser, (latent_dim, sizes) -> (encoder, decoder))
FAMILIES = {
    "dense": (parse_dense, lambda d, h: (DenseEncoder(d, h[::-1]), DenseDecoder(d, h))),
    "conv": (parse_conv, lambda d, c: (ConvEncoder(d, c), ConvDecoder(d, c))),
}


# family -> (sizes, latent_dim) -> trainable parameters, equal to count_parameters(build_vae(...))
PARAMETER_COUNTS = {"dense": dense_parameters, "conv": conv_vae_parameters}


def build_vae(family: str, arch: str, latent_dim: int) -> VAE:
    """The VAE of a family ('dense' or 'conv'), architecture name and latent size; refused if too large."""
    sizes = arch_sizes(family, arch)
    if latent_dim < 1:
        raise VaelabError(f"latent_dim must be >= 1 (got {latent_dim})")
    check_fits(family, arch, latent_dim)
    return VAE(*FAMILIES[family][1](latent_dim, sizes), latent_dim=latent_dim)
