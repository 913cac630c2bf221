"""VAE against DDPM: the same metrics for both, on tiny models (numbers are not meaningful, the plumbing is)."""

import json
import math

import pytest

from vaelab.cli.main import main
from vaelab.data.images import load
from vaelab.metrics.evaluate import QUICK, evaluate_path, settings_with
from vaelab.studies.versus import DDPM_SAMPLERS, compare, write


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
    result = compare(vae, ddpm, load(data), n=24, device="cpu", log=lambda m: None)
    assert [r["generator"] for r in result["rows"]] == ["VAE", *DDPM_SAMPLERS]
    for r in result["rows"]:
        assert r["n"] == 24 and math.isfinite(r["fd_lenet"]) and 0 <= r["precision"] <= 1 and r["images_per_second"] > 0
    assert result["vae"]["parameters"] > 0 and result["ddpm"]["parameters"] > 0
    js, md, png = write(result, tmp_path / "cmp")
    assert "| DDIM-50 |" in md.read_text() and png.stat().st_size > 1000
    assert "shown" not in json.loads(js.read_text())


def test_evaluate_accepts_a_ddpm_run(runs):
    data, _, ddpm = runs
    m = evaluate_path(ddpm, load(data), settings_with(QUICK, n_samples=24, n_ref=64), "cpu")
    assert m["kind"] == "ddpm" and math.isfinite(m["sample_quality"]["fd_lenet"])
    assert (ddpm / "metrics.json").exists()
