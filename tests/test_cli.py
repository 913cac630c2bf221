"""The real `vaelab` command end to end on a tiny MNIST, and one clean message for each bad input."""

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import write_mnist

from vaelab.cli.main import main
from vaelab.vae.networks import build_vae
from vaelab.nn import count_parameters


def vaelab(*args, env_extra=None, cwd=None):
    env = {**os.environ, "VAELAB_THREADS": "1", **(env_extra or {})}
    env.pop("VAELAB_DATA", None)
    return subprocess.run([sys.executable, "-m", "vaelab.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def assert_clean_error(r, code, fragment):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and fragment in r.stderr, r.stderr
    assert len([l for l in r.stderr.splitlines() if "error:" in l]) == 1


def test_train_figures_resume_end_to_end(tmp_path, tiny_mnist):
    run = tmp_path / "run"
    common = ["--data-dir", tiny_mnist]
    r = vaelab("train", "--model", "conv", "--arch", "16-32-64", "--latent-dim", "2", "--epochs", "1",
               "--batch-size", "64", "--device", "cpu", "--out", run, *common)
    assert r.returncode == 0, r.stderr
    assert {"config.json", "metrics.jsonl", "model.safetensors", "state.pt"} <= {p.name for p in run.iterdir()}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["seed"] == 0 and cfg["meta"]["torch"] and cfg["model"]["arch"] == "16-32-64"
    r = vaelab("train", "--out", run, "--resume", "--epochs", "2", *common)
    assert r.returncode == 0, r.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    r = vaelab("figures", run, *common)
    assert r.returncode == 0, r.stderr
    for name in ("samples.png", "reconstructions.png", "latent.png", "manifold.png", "interpolation.png"):
        assert (run / name).stat().st_size > 1000 and str(run / name) in r.stdout


@pytest.mark.parametrize("args, code, fragment", [
    (["train", "--arch", "1-2-3-4", "--out", "x"], 2, "unknown conv architecture"),
    (["train", "--beta", "-1", "--out", "x"], 2, "beta must be"),
    (["train", "--beta", "nan", "--out", "x"], 2, "must be finite"),
    (["train", "--latent-dim", "0", "--out", "x"], 2, "must be >= 1"),
    (["train", "--device", "cuda:0", "--out", "x"], 2, "no CUDA GPU"),
    (["sample", "no/such/run"], 4, "is not a folder"),
    (["train", "--out", "fresh", "--resume"], 4, "no run to resume"),
])
def test_bad_options_give_one_line(tmp_path, tiny_mnist, args, code, fragment):
    r = vaelab(*args, "--data-dir", tiny_mnist, cwd=tmp_path) if args[0] == "train" else vaelab(*args, cwd=tmp_path)
    assert_clean_error(r, code, fragment)


def test_foreign_and_corrupt_run_folders(tmp_path):
    (tmp_path / "notrun").mkdir()
    assert_clean_error(vaelab("sample", tmp_path / "notrun"), 4, "not a vaelab run folder")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    assert_clean_error(vaelab("latent", bad), 4, "not valid JSON")
    (bad / "config.json").write_text(json.dumps({"kind": "vae", "model": {"wings": 2}}))
    (bad / "model.safetensors").write_bytes(b"junk")
    assert_clean_error(vaelab("sample", bad), 4, "unknown config key")


def test_corrupt_data_is_one_line(tmp_path):
    folder = write_mnist(tmp_path / "m")
    blob = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(blob[:-100])
    r = vaelab("train", "--epochs", "1", "--out", tmp_path / "r", "--data-dir", folder)
    assert_clean_error(r, 3, "truncated")


def test_data_info_on_tiny_folder_says_not_verified(tiny_mnist):
    r = vaelab("data", "info", "--data-dir", tiny_mnist)
    assert r.returncode == 3 and "md5 differs" in r.stdout and "Traceback" not in r.stderr


def test_help_explains():
    r = vaelab("--help")
    assert r.returncode == 0 and "demo" in r.stdout and "VAELAB_DATA" in r.stdout


def history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_precision_bf16_reaches_the_run(tmp_path, tiny_mnist, monkeypatch):
    """`--precision bf16` is written to config.json and trains: finite losses within 5 % of fp32's, not equal."""
    monkeypatch.setenv("VAELAB_THREADS", "1")
    common = ["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--epochs", "2",
              "--batch-size", "64", "--device", "cpu", "--data-dir", str(tiny_mnist)]
    assert main([*common, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    assert main([*common, "--out", str(tmp_path / "fp32")]) == 0
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["train"]["precision"] == "bf16"
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["train"]["precision"] == "fp32"
    for a, b in zip(history(tmp_path / "fp32"), history(tmp_path / "bf16")):
        assert math.isfinite(b["train_loss"]) and b["train_loss"] != a["train_loss"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)


def test_demo_on_data_writes_four_figures_and_a_summary(tmp_path, tiny_mnist, monkeypatch, capsys):
    """`vaelab demo` in process, one epoch on the tiny MNIST: the report's conv VAE, its figures, summary.json."""
    monkeypatch.setenv("VAELAB_THREADS", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--device", "cpu", "--data-dir", str(tiny_mnist)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"model", "parameters", "epochs", "test_neg_elbo", "test_recon", "test_kl",
                            "train_seconds", "seed", "figures"}
    figures = ["samples.png", "reconstructions.png", "latent.png", "interpolation.png"]  # latent 10: no manifold
    assert summary["figures"] == figures
    for name in figures:
        assert (out / name).stat().st_size > 1000
    last = history(out)[-1]
    assert summary["epochs"] == 1 and summary["seed"] == 0
    assert summary["model"] == "conv 32-64-128, latent 10, beta 1"
    assert summary["parameters"] == count_parameters(build_vae("conv", "32-64-128", 10))
    assert summary["test_neg_elbo"] == last["test_neg_elbo"] and math.isfinite(summary["test_neg_elbo"])
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_recon"] + summary["test_kl"])
    assert summary["train_seconds"] == last["seconds"] > 0
    stdout = capsys.readouterr().out
    assert "vaelab demo: conv 32-64-128" in stdout and str(out / "summary.json") in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == {"family": "conv", "arch": "32-64-128", "latent_dim": 10}
