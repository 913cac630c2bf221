"""Likelihood, IWAE, latent probes and the evaluate/compare commands, on tiny models and synthetic data."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch.distributions import Bernoulli, Normal

from vaelab.cli.main import main
from vaelab.data import sources
from vaelab.data.registry import FASHION_MNIST, MNIST
from vaelab.data.images import Images, to_unit
from vaelab.errors import DataError, RunError
from vaelab.metrics import evaluate, latent, likelihood
from vaelab.metrics.classifier import LeNet, ReferenceClassifier
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.networks import build_vae
from vaelab.engine import runs
from vaelab.engine.runs import prepare_new, write_config
from vaelab.vae.train import train_vae

torch.set_num_threads(1)
TINY = evaluate.Settings(test_images=100, iwae_k=5, iwae_images=20, n_samples=64, n_ref=64, probe_train=200)
REAL_MNIST = os.environ.get("VAELAB_DATA") or "/work/shared/data/mnist"


def synthetic_mnist(n_train=256, n_test=128, seed=0, dataset=MNIST) -> Images:
    """Class-dependent images: digit c lights up row band c, plus noise (so probes have something to find)."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
        for c in range(10):
            x[y == c, :, 2 * c + 4:2 * c + 7, 4:24] += 0.7
        return (x.clamp(0, 1) * 255).to(torch.uint8), y

    (trx, tr_y), (tex, te_y) = make(n_train), make(n_test)
    return Images(trx, tr_y, tex, te_y, source=Path("synthetic"), dataset=dataset)


def tiny_classifier():
    torch.manual_seed(0)
    return ReferenceClassifier(LeNet(4, 8, 16).eval(), "tiny-random", {}, None)


def tiny_vae(latent=3, seed=0):
    torch.manual_seed(seed)
    return build_vae("dense", "16-32", latent).eval()


def make_run(folder: Path, mnist: Images, binarize=False) -> Path:
    cfg = VAEConfig(dataset=mnist.dataset.name, model=VAEModelConfig("dense", "16-32", 3),
                    train=VAETrainConfig(epochs=1, batch_size=64, binarize=binarize, device="cpu")).validate()
    prepare_new(folder)
    write_config(folder, cfg)
    train_vae(folder, cfg, mnist, log=lambda m: None)
    return folder


# ---------------------------------------------------------------- likelihood and IWAE
def test_likelihood_parts_add_up_and_kl_per_dim_sums_to_kl():
    x = to_unit(synthetic_mnist().test_x)
    out, mu, neg_elbo = likelihood.likelihood(tiny_vae(), x)
    assert out["neg_elbo"] == pytest.approx(out["recon"] + out["kl"])
    assert sum(out["kl_per_dim"]) == pytest.approx(out["kl"])
    assert mu.shape == (len(x), 3) and neg_elbo.shape == (len(x),)
    assert float(neg_elbo.mean()) == pytest.approx(out["neg_elbo"])


def test_active_units_count_dimensions_whose_mean_varies():
    model = tiny_vae(latent=5)
    with torch.no_grad():
        model.encoder.fc_mu.weight[:2] = 0  # mu_0 and mu_1 are constant over the data: inactive
        model.encoder.fc_mu.weight[2:] *= 20  # the others vary well above the 0.01 threshold
    out, _, _ = likelihood.likelihood(model, to_unit(synthetic_mnist().test_x))
    assert out["active_units"] == 3
    assert out["mu_variance"][0] == pytest.approx(0, abs=1e-12)


def test_iwae_rises_with_k_and_lies_above_the_elbo():
    model = tiny_vae()
    with torch.no_grad():
        model.decoder.fc_layers[0].weight *= 10  # p(x|z) depends strongly on z: the gaps are tens of nats
    x = to_unit(synthetic_mnist().test_x[:64])
    _, _, neg_elbo = likelihood.likelihood(model, x)
    bounds = [float(likelihood.iwae_log_px(model, x, k, seed=1).mean()) for k in (1, 10, 100)]
    assert bounds[0] + 5 < bounds[1] < bounds[2] - 1
    assert bounds[1] > -float(neg_elbo.mean()) + 5


def test_iwae_with_one_sample_estimates_the_elbo():
    # k = 1: log w = log p(x|z) + log p(z) - log q(z|x), an unbiased estimate of the closed-form-KL ELBO
    model, x = tiny_vae(), to_unit(synthetic_mnist().test_x)
    _, _, neg_elbo = likelihood.likelihood(model, x)
    assert float(likelihood.iwae_log_px(model, x, 1, seed=2).mean()) == pytest.approx(-float(neg_elbo.mean()), rel=0.005)


def test_iwae_with_one_sample_estimates_the_elbo_under_the_discretized_likelihood():
    model, x = tiny_vae(), to_unit(synthetic_mnist().test_x)
    _, _, neg_elbo = likelihood.likelihood(model, x, px="discretized_logistic")
    _, _, bce = likelihood.likelihood(model, x)
    assert not torch.allclose(neg_elbo, bce)  # the likelihood did reach the decoder term
    iwae1 = float(likelihood.iwae_log_px(model, x, 1, seed=2, px="discretized_logistic").mean())
    assert iwae1 == pytest.approx(-float(neg_elbo.mean()), rel=0.005)


def test_summary_is_a_mean_with_its_normal_interval_in_nats_and_bits():
    v = torch.tensor([100.0, 110.0, 120.0, 130.0])
    s = likelihood.summary(v, "discretized-8bit", dims=784)
    half = 1.959963984540054 * float(v.std()) / 2
    assert s["nats"] == 115 and s["nats_ci"] == pytest.approx([115 - half, 115 + half]) and s["n"] == 4
    assert s["bits_per_dim"] == pytest.approx(115 / (784 * math.log(2)))
    assert s["bits_per_dim_ci"][1] == pytest.approx((115 + half) / (784 * math.log(2)))


def test_iwae_normalisation_is_exact_when_weights_are_constant():
    # q = p and a decoder that ignores z: every importance weight is p(x), so log-mean-exp must return
    # exactly log p(x), whatever k and however the samples are chunked
    model = tiny_vae()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()  # mu = 0, logvar = 0
        model.decoder.fc_out.weight.zero_()
    x = to_unit(synthetic_mnist().test_x[:7])
    exact = -torch.nn.functional.binary_cross_entropy_with_logits(
        model.decoder.fc_out.bias.view(1, 1, 28, 28).expand_as(x), x, reduction="none").flatten(1).sum(1)
    for k, max_decodes in [(1, 4096), (13, 5), (50, 64)]:
        got = likelihood.iwae_log_px(model, x, k, max_decodes=max_decodes)
        assert torch.allclose(got, exact.double(), atol=1e-4), (k, max_decodes)


def iwae_reference(model, x, k, seed):
    """log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), every density from torch.distributions (float64), on the noise
    iwae_log_px draws in one chunk: a (k, N, D) standard normal tensor from its seed."""
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.randn((k, *mu.shape), generator=torch.Generator().manual_seed(seed))  # (k, N, D)
        z = mu + eps * torch.exp(0.5 * logvar)
        logits = model.decode_logits(z.reshape(-1, z.shape[-1])).view(k, *x.shape)
    zd = z.double()
    log_q = Normal(mu.double(), torch.exp(0.5 * logvar.double())).log_prob(zd).sum(-1)  # (k, N)
    log_p = Normal(torch.zeros((), dtype=torch.float64), 1.0).log_prob(zd).sum(-1)
    log_px_z = Bernoulli(logits=logits.double()).log_prob(x.double().expand_as(logits)).flatten(2).sum(2)
    return torch.logsumexp(log_px_z + log_p - log_q, 0) - math.log(k), logvar


def test_iwae_matches_torch_distributions_with_nonzero_logvar():
    model = tiny_vae()
    with torch.no_grad():
        model.encoder.fc_logvar.bias.copy_(torch.tensor([-2.0, -1.5, -1.0]))  # sigma 0.37 .. 0.61
        model.decoder.fc_layers[0].weight *= 5  # p(x|z) changes with z: the k weights differ
    x_u = to_unit(synthetic_mnist().test_x[:8])
    x = torch.bernoulli(x_u, generator=torch.Generator().manual_seed(7))  # binary pixels: a true Bernoulli likelihood
    for k in (16, 1):  # one chunk each (k * N <= max_decodes)
        want, logvar = iwae_reference(model, x, k, seed=3)
        assert (logvar < -0.5).all()  # log q(z|x) without its logvar term would be off by > 0.25 nats per dimension
        got = likelihood.iwae_log_px(model, x, k, seed=3)
        assert got.dtype == torch.float64 and got.shape == (8,)
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0)


# ---------------------------------------------------------------- latent probes
def test_knn_and_linear_probe_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 4, generator=g) * 10
    y_train, y_test = torch.arange(10).repeat(30), torch.arange(10).repeat(5)
    f_train = centres[y_train] + torch.randn(300, 4, generator=g) * 0.1
    f_test = centres[y_test] + torch.randn(50, 4, generator=g) * 0.1
    assert latent.knn_accuracy(f_train, y_train, f_test, y_test, k=5, block=7) == 1.0
    assert latent.linear_probe(f_train, y_train, f_test, y_test) == 1.0
    assert latent.silhouette(f_test, y_test) > 0.9


def test_knn_matches_sklearn_with_k1():
    g = torch.Generator().manual_seed(1)
    f_train, f_test = torch.randn(200, 3, generator=g), torch.randn(60, 3, generator=g)
    y_train, y_test = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (60,), generator=g)
    expected = KNeighborsClassifier(1).fit(f_train.numpy(), y_train.numpy()).score(f_test.numpy(), y_test.numpy())
    assert latent.knn_accuracy(f_train, y_train, f_test, y_test, k=1) == pytest.approx(expected)


# ---------------------------------------------------------------- end to end: metrics.json, compare, errors
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    mnist = synthetic_mnist()
    root = tmp_path_factory.mktemp("runs")
    runs = [make_run(root / "gray", mnist), make_run(root / "bin", mnist, binarize=True)]
    metrics = [evaluate.evaluate_path(r, TINY, "cpu", clf=tiny_classifier(), data=mnist) for r in runs]
    return runs, metrics


def test_metrics_json_records_numbers_with_their_settings(evaluated):
    (gray, binarized), (m_gray, m_bin) = evaluated
    saved = json.loads((gray / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m_gray))
    assert saved["data_variant"] == "grayscale" and m_bin["data_variant"] == "binarized"
    assert saved["settings"]["iwae_k"] == 5 and saved["likelihood"]["iwae"]["images"] == 20
    assert saved["sample_quality"]["n"] == 64 and saved["sample_quality"]["classifier"]["sha256"] == "tiny-random"
    assert saved["likelihood"]["iwae"]["neg_log_likelihood"] <= saved["likelihood"]["iwae"]["neg_elbo_same_images"] + 1
    # every likelihood number names its protocol: the report's bernoulli on grey levels, or the binarized one
    assert saved["likelihood"]["protocol"] == "bernoulli-grey" and m_bin["likelihood"]["protocol"] == "binarized"
    assert "not a normalised likelihood" in saved["likelihood"]["protocol_note"]
    for part in (saved["likelihood"]["neg_elbo_summary"], saved["likelihood"]["iwae"]["summary"]):
        assert part["protocol"] == "bernoulli-grey" and part["nats_ci"][0] <= part["nats"] <= part["nats_ci"][1]
    assert saved["likelihood"]["iwae"]["summary"]["n"] == 20
    assert {"knn_accuracy", "linear_probe_accuracy", "silhouette"} <= set(saved["latent"])
    assert {"prior_holes", "on_mu", "on_z", "kernel"} <= set(saved["latent_structure"])
    assert set(saved["sample_quality"]["anchors"]) == {"floor", "ceiling"}
    assert saved["dataset"] == "mnist" and "MNIST" in saved["data_note"]
    assert saved["sample_quality"]["reference"].startswith("first 64 MNIST test images")


def test_data_variant_notes_name_the_dataset():
    name, note = likelihood.data_variant(True, MNIST)
    assert name == "binarized" and note.startswith("dynamically binarised MNIST;") and "Burda" in note
    name, note = likelihood.data_variant(False, FASHION_MNIST)
    assert name == "grayscale" and note.startswith("Fashion-MNIST intensities")
    assert "Fashion-MNIST" in likelihood.data_variant(True, FASHION_MNIST)[1]
    assert "Burda" not in likelihood.data_variant(True, FASHION_MNIST)[1]  # their nats are MNIST's


def test_a_run_is_evaluated_on_its_own_dataset(tmp_path, capsys):
    fashion = synthetic_mnist(dataset=FASHION_MNIST)
    run = make_run(tmp_path / "fashion", fashion)
    m = evaluate.evaluate_path(run, TINY, "cpu", clf=tiny_classifier(), data=lambda name: fashion)
    assert m["dataset"] == "fashion-mnist" and m["data_note"].startswith("Fashion-MNIST intensities")
    assert "Fashion-MNIST test images" in m["sample_quality"]["reference"]
    with pytest.raises(DataError, match="trained on fashion-mnist"):  # images of another dataset are refused
        evaluate.evaluate_path(run, TINY, "cpu", clf=tiny_classifier(), data=synthetic_mnist())
    # the CLI refuses a --dataset other than the run's, before loading anything
    assert main(["evaluate", str(run), "--quick", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "trained on fashion-mnist, not mnist" in capsys.readouterr().err


def test_compare_warns_when_datasets_or_classifiers_differ(evaluated, tmp_path, capsys):
    (gray, _), (m_gray, _) = evaluated
    other = tmp_path / "other"
    other.mkdir()
    m = json.loads(json.dumps(m_gray))
    m["dataset"], m["sample_quality"]["classifier"]["sha256"] = "fashion-mnist", "another-classifier"
    runs.write_metrics(other, m)
    assert main(["compare", str(gray), str(other)]) == 0
    out = capsys.readouterr()
    assert "Fashion-MNIST" in out.out
    assert "different datasets" in out.err and "different reference classifiers" in out.err
    assert main(["compare", str(gray), str(gray)]) == 0
    assert "note:" not in capsys.readouterr().err  # the same run twice compares silently


def test_compare_prints_plain_and_markdown_tables(evaluated, capsys):
    (gray, binarized), _ = evaluated
    assert main(["compare", str(gray), str(binarized)]) == 0
    out = capsys.readouterr()
    assert "FD-LeNet" in out.out and "gray" in out.out and "bin" in out.out and "FID" not in out.out
    assert "not comparable" in out.err  # different data variants
    assert main(["compare", "--markdown", str(gray)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| metric |") and lines[1].startswith("|---|")


def test_compare_never_puts_two_likelihood_protocols_in_one_row(evaluated, capsys):
    (gray, binarized), (m_gray, m_bin) = evaluated

    def rows() -> dict[str, list[str]]:  # the Markdown table: row label -> its cells
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in capsys.readouterr().out.splitlines()]
        return {c[0]: c[1:] for c in cells}

    assert main(["compare", "--markdown", str(gray), str(binarized)]) == 0
    table = rows()
    assert table["likelihood protocol"] == ["bernoulli-grey", "binarized"]
    assert "-ELBO, nats/image" not in table  # split: one row per protocol, each blank for the other's run
    assert table["-ELBO, nats/image [bernoulli-grey]"] == [f"{m_gray['likelihood']['neg_elbo']:.2f}", "-"]
    assert table["-ELBO, nats/image [binarized]"] == ["-", f"{m_bin['likelihood']['neg_elbo']:.2f}"]
    assert main(["compare", "--markdown", str(gray), str(gray)]) == 0  # one protocol: the plain rows
    assert "-ELBO, nats/image" in rows()


def test_compare_without_metrics_is_one_line_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == RunError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vaelab evaluate" in err[0]


def test_evaluate_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--quick", "--data-dir", str(tmp_path)]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_evaluate_help_states_costs(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "5000" in text and "hours" in text and "--quick" in text


@pytest.mark.slow
def test_real_cli_quick_evaluation_of_a_trained_vae(tmp_path, capsys):
    """Train a dense VAE on real MNIST for one epoch, evaluate it with the real (cached) classifier."""
    if not sources.complete(Path(REAL_MNIST), MNIST):
        pytest.skip("real MNIST not available (set VAELAB_DATA)")
    run = tmp_path / "dense"
    assert main(["train", "--model", "dense", "--epochs", "1", "--out", str(run), "--data-dir", REAL_MNIST]) == 0
    assert main(["evaluate", str(run), "--quick", "--data-dir", REAL_MNIST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    sq = m["sample_quality"]
    assert sq["anchors"]["floor"]["fd_lenet"] < sq["fd_lenet"] < sq["anchors"]["ceiling"]["fd_lenet"]
    assert sq["classifier"]["test_accuracy"] >= 0.99
    assert m["likelihood"]["iwae"]["neg_log_likelihood"] < m["likelihood"]["iwae"]["neg_elbo_same_images"]
    assert m["latent"]["knn_accuracy"] > 0.5
