"""The report's architectures: exact parameter counts, shapes, and clear errors."""

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.vae.models import CONV_ARCHS, DENSE_ARCHS, build_vae, count_parameters


def test_report_parameter_counts():
    assert count_parameters(build_vae("dense", "256-512", 5)) == 1_071_130  # report section 2.6
    assert count_parameters(build_vae("conv", "32-64-128", 10)) == 313_557  # report section 3.3


def test_dense_layers_mirror_the_report():
    m = build_vae("dense", "256-512", 5)
    assert [l.out_features for l in m.encoder.fc_layers] == [512, 256]
    assert [l.out_features for l in m.decoder.fc_layers] == [256, 512]


@pytest.mark.parametrize("family, arch", [("dense", a) for a in DENSE_ARCHS] + [("conv", a) for a in CONV_ARCHS]
                         + [("dense", "300-600")])
@pytest.mark.parametrize("latent", [1, 2, 100])
def test_shapes(family, arch, latent):
    m = build_vae(family, arch, latent)
    x = torch.rand(3, 1, 28, 28)
    out = m(x)
    assert out.x_hat.shape == (3, 1, 28, 28) and out.mu.shape == (3, latent) and out.z.shape == (3, latent)
    assert torch.allclose(out.x_hat, torch.sigmoid(out.logits))
    assert 0 <= float(out.x_hat.detach().min()) and float(out.x_hat.detach().max()) <= 1


@pytest.mark.parametrize("family, arch, latent, msg", [
    ("conv", "64-128", 10, "unknown conv architecture"),
    ("dense", "abc", 5, "unknown dense architecture"),
    ("dense", "0-12", 5, "unknown dense architecture"),
    ("mlp", "256-512", 5, "unknown model family"),
    ("conv", "32-64-128", 0, "latent_dim must be >= 1"),
])
def test_bad_architectures(family, arch, latent, msg):
    with pytest.raises(VaelabError, match=msg):
        build_vae(family, arch, latent)


def test_reparameterisation_statistics():
    mu, logvar = torch.full((200000, 1), 2.0), torch.full((200000, 1), torch.log(torch.tensor(0.25)))
    z = build_vae("dense", "128-256", 1).reparameterize(mu, logvar)
    assert abs(z.mean().item() - 2.0) < 0.01 and abs(z.std().item() - 0.5) < 0.01
