"""VAE against DDPM: the same metrics for both, on tiny models (numbers are not meaningful, the plumbing is)."""

import json
import math
import os
import re
import shutil

import pytest

from vaelab.cli.main import main
from vaelab.data.images import load
from vaelab.engine.runs import prepare_new, write_config
from vaelab.errors import VaelabError
from vaelab.metrics.evaluate import QUICK, evaluate_path, settings_with
from vaelab.studies.versus import DDPM_SAMPLERS, compare, markdown, table, write
from vaelab.vae.config import VAEConfig, VAEModelConfig, VAETrainConfig
from vaelab.vae.train import train_vae


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import write_mnist

    root = tmp_path_factory.mktemp("versus")
    data = write_mnist(root / "mnist", n_train=512, n_test=128)
    vae, ddpm = root / "vae", root / "ddpm"
    assert main(["train", "--model", "dense", "--arch", "32-64", "--latent-dim", "2", "--epochs", "1",
                 "--device", "cpu", "--out", str(vae), "--data-dir", str(data)]) == 0
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "1", "--widths", "4-8", "--timesteps", "100",
                 "--batch-size", "64", "--device", "cpu", "--out", str(ddpm), "--data-dir", str(data)]) == 0
    return data, vae, ddpm


def test_compare_scores_every_generator(runs, tmp_path):
    data, vae, ddpm = runs
    result = compare(vae, ddpm, load("mnist", data), n=24, device="cpu", log=lambda m: None)
    assert [r["generator"] for r in result["rows"]] == ["VAE", *DDPM_SAMPLERS]
    for r in result["rows"]:
        assert r["n"] == 24 and math.isfinite(r["fd_lenet"]) and 0 <= r["precision"] <= 1 and r["images_per_second"] > 0
        assert 0 <= r["coverage"] <= 1 and r["density"] >= 0
        for name in ("fd_lenet", "precision", "recall", "density", "coverage", "classifier_score"):
            low, high = r[f"{name}_ci"]
            assert low <= high and math.isfinite(low) and math.isfinite(high), name
        assert r["interval"]["method"].startswith("bootstrap over the 24 generated images, 200 resamples")
    header, body = table(result)
    assert {"density", "coverage"} <= set(header)
    fd = body[0][header.index("FD-LeNet")]
    assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] \(N=24\)", fd), fd
    assert result["vae"]["parameters"] > 0 and result["ddpm"]["parameters"] > 0
    assert result["dataset"] == "mnist" and result["n_ref"] == 128 and result["classifier"]["dataset"] == "mnist"
    js, md, png = write(result, tmp_path / "cmp")
    assert "| DDIM-50 |" in md.read_text() and png.stat().st_size > 1000
    text = md.read_text()
    assert "against the 128 MNIST test images" in text and "[low, high]: 95% interval, bootstrap" in text
    saved = json.loads(js.read_text())
    assert "shown" not in saved and markdown(saved, md.parent) == md.read_text()  # rendered from the data
    # the runs named from the Markdown's folder, never by their machine-absolute paths
    assert f"VAE {os.path.relpath(vae, md.parent)} (" in text and str(vae) not in text and str(ddpm) not in text
    assert saved["vae"]["run"] == str(vae.resolve())  # the data keeps where the runs are


def test_versus_refuses_runs_of_different_datasets(runs, tmp_path, capsys):
    data, vae, ddpm = runs
    fashion = tmp_path / "ddpm-fashion"
    shutil.copytree(ddpm, fashion)
    cfg = json.loads((fashion / "config.json").read_text())
    (fashion / "config.json").write_text(json.dumps({**cfg, "dataset": "fashion-mnist"}))
    with pytest.raises(VaelabError, match="MNIST and the DDPM .* on Fashion-MNIST"):
        compare(vae, fashion, load("mnist", data), n=24, device="cpu", log=lambda m: None)
    assert main(["versus", str(vae), str(fashion), "--out", str(tmp_path / "out"), "--n", "10",
                 "--device", "cpu", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one dataset" in err[0] and not (tmp_path / "out").exists()


def test_versus_refuses_a_dataset_option_other_than_the_runs(runs, tmp_path, capsys):
    data, vae, ddpm = runs
    assert main(["versus", str(vae), str(ddpm), "--out", str(tmp_path / "out"), "--n", "10", "--device", "cpu",
                 "--dataset", "fashion-mnist", "--data-dir", str(data)]) == 2
    assert "trained on mnist, not fashion-mnist" in capsys.readouterr().err


def test_evaluate_accepts_a_ddpm_run(runs):
    data, _, ddpm = runs
    m = evaluate_path(ddpm, settings_with(QUICK, n_samples=24, n_ref=64), "cpu", data_dir=data)
    assert m["kind"] == "ddpm" and math.isfinite(m["sample_quality"]["fd_lenet"])
    assert m["dataset"] == "mnist" and "MNIST" in m["data_note"]
    assert (ddpm / "metrics.json").exists()
    lik = m["likelihood"]  # QUICK: the bound of 200 (here all 128) test images from 5 sampled steps each
    assert lik["protocol"] == "discretized-8bit" and lik["n"] == 128 and lik["k"] == 5 and lik["steps"] == 100
    assert lik["nats_ci"][0] <= lik["nats"] <= lik["nats_ci"][1] and lik["nats"] > 0
    assert lik["bits_per_dim"] == pytest.approx(lik["nats"] / (784 * math.log(2)))


def test_the_likelihood_table_puts_only_8bit_numbers_in_its_column(runs, tmp_path):
    data, vae, ddpm = runs
    mnist = load("mnist", data)
    result = compare(vae, ddpm, mnist, n=16, samplers=("DDIM-50",), device="cpu", log=lambda m: None,
                     likelihood_images=32, iwae_k=3, bound_k=4)
    lik = result["likelihood"]
    assert [r["model"] for r in lik["rows"]] == ["DDPM bound (4 steps t per image)"]  # the VAE is bernoulli-grey
    assert lik["vae_protocol"] == "bernoulli-grey" and "another protocol, bernoulli-grey" in lik["note"]
    assert "another protocol" in markdown(result) and "| DDPM bound" in markdown(result)
    disc = tmp_path / "disc"
    cfg = VAEConfig(model=VAEModelConfig("dense", "32-64", 2),
                    train=VAETrainConfig(epochs=1, batch_size=64, device="cpu", likelihood="discretized_logistic"))
    prepare_new(disc)
    write_config(disc, cfg)
    train_vae(disc, cfg, mnist, log=lambda m: None)
    result = compare(disc, ddpm, mnist, n=16, samplers=("DDIM-50",), device="cpu", log=lambda m: None,
                     likelihood_images=32, iwae_k=3, bound_k=4)
    rows = result["likelihood"]["rows"]
    assert [r["model"] for r in rows] == ["VAE -ELBO", "VAE IWAE (k=3)", "DDPM bound (4 steps t per image)"]
    assert all(r["protocol"] == "discretized-8bit" and r["n"] == 32 for r in rows)
    assert rows[1]["nats"] <= rows[0]["nats"] + 1  # IWAE tightens the ELBO
    text = markdown(result)
    assert "another protocol" not in text and re.search(r"\| VAE -ELBO \| discretized-8bit \| [\d.]+ \[", text)


def test_markdown_prints_the_runs_relative_to_its_folder(tmp_path, monkeypatch):
    from test_report import fake_comparison

    result = {k: v for k, v in fake_comparison().items() if k != "shown"}
    result["vae"]["run"], result["ddpm"]["run"] = str(tmp_path / "repro" / "beta" / "x"), str(tmp_path / "ddpm-run")
    text = markdown(result, tmp_path / "repro")
    assert "VAE beta/x (1,000 parameters" in text and "against DDPM ../ddpm-run (2,000 parameters" in text
    assert str(tmp_path) not in text
    monkeypatch.chdir(tmp_path)  # by default, from the current folder (what `vaelab versus` prints)
    assert "VAE repro/beta/x (" in markdown(result) and "DDPM ddpm-run (" in markdown(result)


def test_the_versus_command_sizes_its_likelihood_table(runs, tmp_path, capsys):
    data, vae, ddpm = runs
    out = tmp_path / "out"
    assert main(["versus", str(vae), str(ddpm), "--out", str(out), "--n", "10", "--samplers", "DDIM-50",
                 "--likelihood-images", "6", "--iwae-k", "2", "--bound-k", "3", "--device", "cpu",
                 "--data-dir", str(data)]) == 0
    lik = json.loads((out / "comparison.json").read_text())["likelihood"]
    assert lik and all(r["n"] == 6 for r in lik["rows"]) and "8-bit" in (out / "comparison.md").read_text()
    assert main(["versus", str(vae), str(ddpm), "--out", str(tmp_path / "none"), "--n", "10", "--samplers",
                 "DDIM-50", "--likelihood-images", "0", "--device", "cpu", "--data-dir", str(data)]) == 0
    assert "likelihood" not in json.loads((tmp_path / "none" / "comparison.json").read_text())


def test_the_likelihood_verdict_says_whether_the_classic_contrast_holds():
    from vaelab.studies.versus import likelihood_verdict

    def result(vae_nats, ddpm_nats, vae_fd, ddpm_fd):
        row = lambda model, nats: {"model": model, "nats": nats, "nats_ci": [nats - 1, nats + 1],  # noqa: E731
                                   "bits_per_dim": nats / (784 * math.log(2))}
        return {"rows": [{"generator": "VAE", "fd_lenet": vae_fd}, {"generator": "DDIM-50", "fd_lenet": ddpm_fd}],
                "likelihood": {"rows": [row("VAE -ELBO", vae_nats + 5), row("VAE IWAE (k=100)", vae_nats),
                                        row("DDPM bound", ddpm_nats)]}}

    assert likelihood_verdict(result(900, 1000, 200, 30)).endswith("holds here.")  # better samples, worse nats
    assert "does not hold" in likelihood_verdict(result(1000, 900, 200, 30))  # better at both
    assert "does not hold" in likelihood_verdict(result(900, 1000, 30, 200))  # samples no better
    text = likelihood_verdict(result(900, 1000, 200, 30))
    assert f"{1000 / (784 * math.log(2)):.3f} bits/dim" in text and "VAE IWAE (k=100)" in text
    assert likelihood_verdict({"rows": [], "likelihood": {"rows": [{"model": "DDPM bound"}]}}) == ""
