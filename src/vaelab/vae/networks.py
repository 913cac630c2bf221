"""The report's VAEs (sections 2.1-2.3 and 3.1-3.2): dense and convolutional encoders/decoders.

Decoders return logits; x_hat = sigmoid(logits). The parameters are exactly the report's (its
decoders end in nn.Sigmoid, which has none), and the loss can use the stable, fused
BCE-with-logits instead of log(sigmoid(.)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaelab.errors import VaelabError
from vaelab.vae.archs import arch_sizes, check_fits, conv_geometry

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


# family -> (latent_dim, layer sizes) -> (encoder, decoder); the names and sizes are vae/archs.py's
FAMILIES = {
    "dense": lambda d, h: (DenseEncoder(d, h[::-1]), DenseDecoder(d, h)),
    "conv": lambda d, c: (ConvEncoder(d, c), ConvDecoder(d, c)),
}


def build_vae(family: str, arch: str, latent_dim: int) -> VAE:
    """The VAE of a family ('dense' or 'conv'), architecture name and latent size; refused if too large."""
    sizes = arch_sizes(family, arch)
    if latent_dim < 1:
        raise VaelabError(f"latent_dim must be >= 1 (got {latent_dim})")
    check_fits(family, arch, latent_dim)
    return VAE(*FAMILIES[family](latent_dim, sizes), latent_dim=latent_dim)
