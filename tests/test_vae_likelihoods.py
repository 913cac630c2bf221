"""The VAE's likelihoods p(x|z) (vae/loss.py): normalised where they claim to be, protocols named, the
report's default path unchanged, and old configs still the report's bernoulli."""

import dataclasses
import json
import pytest
import torch
import torch.nn.functional as F

import vaelab

from vaelab.cli.main import main
from vaelab.config import load_json, to_dict
from vaelab.data.images import load
from vaelab.engine.runs import prepare_new, write_config
from vaelab.errors import VaelabError
from vaelab.vae import loss
from vaelab.vae.config import LIKELIHOOD_NAMES, VAEConfig, VAEModelConfig, VAETrainConfig
from vaelab.vae.networks import build_vae
from vaelab.vae.train import elbo_on, train_vae

torch.set_num_threads(1)
LEVELS = torch.arange(256, dtype=torch.float32) / 255  # x as the VAE sees it: grey level / 255


def bin_masses(logit: float) -> torch.Tensor:
    """P(each of the 256 grey levels) for one pixel with this decoder logit, float64."""
    return (-loss.discretized_logistic_nll(torch.full((256,), logit), LEVELS)).double().exp()


@pytest.mark.parametrize("scales", [(0.25, 16.0), (0.01, 0.01), (3.0, 300.0), (40.0, 1.0)])
def test_discretized_logistic_sums_to_one_over_the_256_bins(monkeypatch, scales):
    monkeypatch.setattr(loss, "LOGISTIC_SCALES", scales)
    for logit in (-30.0, -8.0, -2.0, -0.1, 0.0, 0.7, 3.0, 9.0, 30.0):
        p = bin_masses(logit)
        assert (p >= 0).all()
        assert abs(float(p.sum()) - 1) < 1e-4, (scales, logit, float(p.sum()))


def test_discretized_logistic_is_the_logistic_mass_of_an_inner_bin():
    logit, x = torch.tensor([0.4]), torch.tensor([100 / 255])
    m = torch.sigmoid(logit).double()
    s = loss.logistic_scale(m)
    cdf = lambda v: torch.sigmoid((v - (2 * m - 1)) / s)  # noqa: E731
    centre = 100 / 127.5 - 1
    expected = -torch.log(cdf(centre + 1 / 255) - cdf(centre - 1 / 255))
    assert torch.allclose(loss.discretized_logistic_nll(logit, x).double(), expected, rtol=1e-4)


def test_discretized_logistic_has_finite_gradients_at_extreme_logits():
    logits = torch.tensor([-80.0, -20.0, 0.0, 20.0, 80.0]).repeat(4).requires_grad_()
    x = torch.tensor([0.0, 1.0, 0.5, 254 / 255]).repeat_interleave(5)
    loss.discretized_logistic_nll(logits, x).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_every_config_name_has_a_likelihood_and_a_protocol():
    assert set(loss.LIKELIHOODS) == set(LIKELIHOOD_NAMES) == set(loss.PROTOCOLS)
    assert loss.protocol("bernoulli", False) == "bernoulli-grey"
    assert loss.protocol("bernoulli", True) == "binarized"  # runs trained with binarize before the field
    assert loss.protocol("binarized", True) == "binarized"
    assert loss.protocol("discretized_logistic", False) == "discretized-8bit"


def test_old_config_without_the_field_loads_as_bernoulli(tmp_path):
    cfg = VAEConfig(train=VAETrainConfig(binarize=True))
    data = to_dict(cfg)
    del data["train"]["likelihood"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = load_json(tmp_path / "config.json", VAEConfig)
    assert loaded.train.likelihood == "bernoulli" and loaded.train.binarize
    assert loss.protocol(loaded.train.likelihood, loaded.train.binarize) == "binarized"


def test_likelihood_field_is_validated_and_binarized_binarises():
    assert VAETrainConfig(likelihood="binarized").binarize
    VAEConfig(train=VAETrainConfig(likelihood="discretized_logistic")).validate()
    with pytest.raises(VaelabError, match="unknown likelihood"):
        VAETrainConfig(likelihood="gaussian").validate()
    with pytest.raises(VaelabError, match="binarised"):
        VAETrainConfig(likelihood="discretized_logistic", binarize=True).validate()


def test_the_default_loss_is_the_reports_bce_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    logits, x = torch.randn(8, 1, 28, 28, generator=g), torch.rand(8, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    t = loss.elbo_terms(logits, x, mu, logvar, 2.0)
    old_recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    assert torch.equal(t.recon, old_recon)
    assert torch.equal(t.loss, old_recon + 2.0 * loss.kl_per_image(mu, logvar).mean())
    torch.manual_seed(0)
    model = build_vae("dense", "16-32", 3)
    torch.manual_seed(1)
    a = elbo_on(model, x, 1.0)
    torch.manual_seed(1)
    assert a == elbo_on(model, x, 1.0, likelihood="bernoulli")


def test_a_discretized_vae_trains_and_its_neg_elbo_is_in_nats_of_8bit_images(tmp_path, tiny_mnist):
    cfg = VAEConfig(model=VAEModelConfig("dense", "32-64", 2),
                    train=VAETrainConfig(epochs=2, batch_size=64, device="cpu", likelihood="discretized_logistic"))
    prepare_new(tmp_path / "r")
    write_config(tmp_path / "r", cfg)
    hist = train_vae(tmp_path / "r", cfg, load("mnist", tiny_mnist), check_every=2, log=lambda m: None)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert 0 < hist[-1]["test_recon"] < hist[0]["test_recon"]  # -log of a probability of 784 grey levels: > 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["likelihood"] == "discretized_logistic"


def test_the_likelihood_option_reaches_the_run_from_the_cli_and_the_api(tmp_path, tiny_mnist):
    common = ["--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--epochs", "1", "--batch-size", "64",
              "--device", "cpu", "--data-dir", str(tiny_mnist)]
    assert main(["train", *common, "--likelihood", "discretized_logistic", "--out", str(tmp_path / "cli")]) == 0
    api = vaelab.train(out=tmp_path / "api", model="dense", arch="16-32", latent_dim=2, epochs=1, batch_size=64,
                       device="cpu", data_dir=tiny_mnist, likelihood="discretized_logistic")
    a, b = (json.loads((p / "config.json").read_text()) for p in (tmp_path / "cli", api.path))
    assert a["train"]["likelihood"] == b["train"]["likelihood"] == "discretized_logistic"
    assert {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}
    with pytest.raises(SystemExit):  # argparse refuses a name the registry does not have
        main(["train", *common, "--likelihood", "nope", "--out", str(tmp_path / "bad")])


def test_evaluate_takes_the_ddpm_bound_settings(tmp_path, tiny_mnist, capsys):
    run = tmp_path / "ddpm"
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "1", "--widths", "4-8", "--timesteps", "50",
                 "--batch-size", "64", "--device", "cpu", "--out", str(run), "--data-dir", str(tiny_mnist)]) == 0
    assert main(["evaluate", str(run), "--quick", "--samples", "200", "--bound-images", "7", "--bound-k", "0",
                 "--device", "cpu", "--data-dir", str(tiny_mnist)]) == 0
    lik = json.loads((run / "metrics.json").read_text())["likelihood"]
    assert lik["n"] == 7 and lik["k"] is None and "exact" in lik["estimator"] and lik["protocol"] == "discretized-8bit"
