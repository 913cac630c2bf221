"""The report's architectures: exact parameter counts, shapes, and clear errors."""

import sys

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.vae import networks
from vaelab.vae.config import VAEModelConfig
from vaelab.vae import archs
from vaelab.vae.archs import CONV_ARCHS, DENSE_ARCHS, estimate_parameters
from vaelab.vae.networks import build_vae
from vaelab.nn import count_parameters


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


@pytest.mark.parametrize("family, arch", [("dense", a) for a in DENSE_ARCHS] + [("conv", a) for a in CONV_ARCHS]
                         + [("dense", a) for a in ("7", "300-600", "13-1000-5", "1-1-1-1")])
@pytest.mark.parametrize("latent", [1, 5, 10, 100])
def test_estimate_equals_the_built_model(family, arch, latent):
    assert estimate_parameters(family, arch, latent) == count_parameters(build_vae(family, arch, latent))


def test_estimate_gives_the_report_counts():
    assert estimate_parameters("dense", "256-512", 5) == 1_071_130
    assert estimate_parameters("conv", "32-64-128", 10) == 313_557


def refuse_to_build(monkeypatch):
    """Make building any network fail the test: a refusal must come from the estimate alone."""
    monkeypatch.setattr(networks.nn, "Linear", lambda *a, **k: pytest.fail("a layer was built"))
    monkeypatch.setattr(networks.nn, "Conv2d", lambda *a, **k: pytest.fail("a layer was built"))


@pytest.mark.parametrize("family, arch, latent, count", [
    ("dense", "99999999-99999999", 5, "20,000,158,299,999,209"),
    ("dense", "256-512", 10**9, "770,001,067,280"),
    ("conv", "32-64-128", 10**9, "9,602,000,217,537"),
])
def test_too_large_is_refused_before_building(monkeypatch, family, arch, latent, count):
    refuse_to_build(monkeypatch)
    with pytest.raises(VaelabError) as e:
        build_vae(family, arch, latent)
    message, needed = str(e.value), int(count.replace(",", "")) * 16
    assert e.value.exit_code == 2 and f"has {count} parameters" in message and f"{needed:,} bytes" in message
    assert "over the limit of" in message, message


def test_validate_refuses_a_huge_architecture_at_its_latent_size(monkeypatch):
    refuse_to_build(monkeypatch)  # refused from the config alone, before data are loaded or a folder written
    with pytest.raises(VaelabError, match="at latent_dim 5 has 20,000,158,299,999,209 parameters"):
        VAEModelConfig("dense", "99999999-99999999", 5).validate()
    with pytest.raises(VaelabError, match="at latent_dim 1000000000 has"):
        VAEModelConfig("conv", "32-64-128", 10**9).validate()


def test_the_limit_is_the_cap_or_the_memory_available(monkeypatch):
    monkeypatch.setattr(archs, "available_memory", lambda: None)  # unreadable: the fixed cap alone
    assert archs.training_limit() == (32 * 10**9, "the cap of 2,000,000,000 parameters")
    build_vae("dense", "256-512", 5)
    with pytest.raises(VaelabError, match=r"over the limit of 32,000,000,000 bytes \(the cap of 2,000,000,000"):
        build_vae("dense", "50000-50000", 5)  # 5.08e9 parameters
    monkeypatch.setattr(archs, "available_memory", lambda: 16_000_000)  # 1,000,000 parameters fit
    with pytest.raises(VaelabError, match=r"1,071,130 parameters: training needs 17,138,080 bytes.*memory available"):
        build_vae("dense", "256-512", 5)
    assert count_parameters(build_vae("conv", "32-64-128", 10)) == 313_557


def test_available_memory_is_read_on_linux():
    memory = archs.available_memory()
    assert memory is not None and memory > 0 if sys.platform == "linux" else memory is None or memory > 0
