"""`vaelab ddpm ...` end to end on a tiny MNIST and a tiny UNet: run folder, exact resume, samplers, errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import write_mnist
from vaelab.engine import checkpoint
from vaelab.cli.main import main
from vaelab.config import load_json
from vaelab.data.images import load
from vaelab.diffusion.sample import generate
from vaelab.diffusion.config import PROFILES, DDPMConfig, profile_config
import vaelab.diffusion.train as dt
from vaelab.diffusion.run import open_ddpm
from vaelab.diffusion.train import EMA, train_ddpm
from vaelab.errors import TrainingDiverged, VaelabError
from vaelab.engine.runs import prepare_new, write_config

TINY = ["--widths", "4-8", "--timesteps", "50", "--batch-size", "64", "--device", "cpu"]


def vaelab(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """One tiny synthetic MNIST for the whole module."""
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """A tiny DDPM run trained for one epoch through the CLI, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("ddpm") / "run"
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "1", *TINY, "--out", str(run),
                 "--data-dir", str(tiny_data)]) == 0
    return run


def test_train_writes_a_complete_run_folder(trained):
    assert {"config.json", "metrics.jsonl", "model.safetensors", "state.pt", "samples.png"} <= {
        p.name for p in trained.iterdir()}
    cfg = load_json(trained / "config.json", DDPMConfig)
    assert cfg.kind == "ddpm" and cfg.profile == "quick" and cfg.model.widths == "4-8"
    assert cfg.schedule.timesteps == 50 and cfg.train.epochs == 1
    rec = json.loads((trained / "metrics.jsonl").read_text())
    assert rec["epoch"] == 1 and 0 < rec["train_mse"] < 10 and rec["steps"] == 4  # 256 images / 64
    weights = checkpoint.load_weights(trained / "model.safetensors")
    raw = {k for k in weights if not k.startswith("ema.")}
    assert raw and {k for k in weights if k.startswith("ema.")} == {"ema." + k for k in raw}
    assert not torch.equal(open_ddpm(trained, "cpu").model.final_conv.weight,
                           open_ddpm(trained, "cpu", ema=False).model.final_conv.weight)


def test_resume_is_bit_exact(tmp_path, tiny_mnist):
    """Two epochs in one go, or one epoch then --resume: the same history and the same bits."""
    data = load("mnist", tiny_mnist)
    tiny = {"model.widths": "4-8", "schedule.timesteps": 50, "train.batch_size": 64, "train.device": "cpu"}
    history = {}
    for name, plan in (("full", [2]), ("part", [1, 2])):
        prepare_new(tmp_path / name)
        for i, epochs in enumerate(plan):
            cfg = profile_config("quick", {**tiny, "train.epochs": epochs})
            write_config(tmp_path / name, cfg)
            history[name] = train_ddpm(tmp_path / name, cfg, data, resume=i > 0, check_every=2, log=lambda m: None)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert len(history["full"]) == 2 and strip(history["full"]) == strip(history["part"])
    w1, w2 = (checkpoint.load_weights(tmp_path / n / "model.safetensors") for n in ("full", "part"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_cli_resume_extends_the_run(trained, tiny_data, capsys, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    code, _, err = vaelab(capsys, "ddpm", "train", "--out", run, "--resume", "--epochs", "2", "--data-dir", tiny_data)
    assert code == 0, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_nan_loss_stops_training_and_keeps_no_bad_checkpoint(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setattr(dt.F, "mse_loss", lambda a, b, **kw: (a - b).pow(2).mean() * float("nan"))
    cfg = profile_config("quick", {"model.widths": "4-8", "schedule.timesteps": 50, "train.device": "cpu",
                                   "train.batch_size": 64})
    prepare_new(tmp_path / "r")
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1"):
        train_ddpm(tmp_path / "r", cfg, load("mnist", tiny_mnist), check_every=2, log=lambda m: None)
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_sample_command(trained, capsys, tmp_path):
    code, out, err = vaelab(capsys, "ddpm", "sample", trained, "--steps", "5", "--side", "3",
                            "--npy", tmp_path / "x.npy", "--n", "7")
    assert code == 0, err
    assert (trained / "samples_ddim5.png").exists() and "images/s" in out
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (7, 28, 28) and x.min() >= 0 and x.max() <= 1
    code, out, err = vaelab(capsys, "ddpm", "sample", trained, "--sampler", "ddpm", "--side", "2")
    assert code == 0 and (trained / "samples_ddpm50.png").exists(), err


def test_figures_command(trained, tiny_data, capsys):
    code, out, err = vaelab(capsys, "ddpm", "figures", trained, "--sampler", "ddim", "--steps", "5",
                            "--data-dir", tiny_data)
    assert code == 0, err
    for name in ("figure4a_noising.png", "figure4b_reverse.png", "figure4c_samples.png"):
        assert (trained / name).stat().st_size > 1000


def test_generate_for_comparisons(trained):
    run = open_ddpm(trained, "cpu")
    images, rate = generate(run, 5, "ddim", 4, seed=1, batch=2)
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.float32 and rate > 0
    assert 0 <= images.min() and images.max() <= 1
    again, _ = generate(run, 5, "ddim", 4, seed=1, batch=2)
    assert torch.equal(images, again)  # eta = 0 and a fixed seed: the same images
    ancestral, _ = generate(run, 2, "ddpm")  # its own default: all T = 50 steps of this tiny run
    assert ancestral.shape == (2, 1, 28, 28)


@pytest.mark.parametrize("args, code, fragment", [
    (["sample", "{run}", "--sampler", "ddpm", "--steps", "10"], 2, "use --sampler ddim"),
    (["sample", "{run}", "--steps", "51"], 2, "between 1 and 50"),
    (["sample", "{run}", "--sampler", "ddpm", "--eta", "0.5"], 2, "ddim only"),
    (["sample", "{tmp}"], 4, "not a vaelab run folder"),
    (["sample", "{vae}"], 4, "holds a VAE run"),
    (["train", "--out", "{run}", *TINY], 4, "already holds a run"),
    (["train", "--out", "{tmp}/new", "--widths", "0-3", *TINY[2:]], 2, "UNet widths"),
    (["train", "--out", "{vae}", "--resume"], 4, "holds a VAE run"),
])
def test_one_line_errors(trained, tmp_path, capsys, args, code, fragment):
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text('{"kind": "vae"}')
    names = {"run": trained, "tmp": tmp_path, "vae": vae}
    got, _, err = vaelab(capsys, "ddpm", *[a.format(**names) for a in args])
    assert got == code, err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_profiles_and_config_checks():
    assert PROFILES["full"].model.widths == "32-64-128-256" and PROFILES["full"].schedule.timesteps == 1000
    assert PROFILES["quick"].train.epochs < PROFILES["full"].train.epochs
    for bad in ({"train.ema_decay": 1.0}, {"schedule.beta_end": 1e-5}, {"model.time_dim": 7}, {"train.nope": 1}):
        with pytest.raises(VaelabError):
            profile_config("quick", bad)
    with pytest.raises(VaelabError, match="profile"):
        profile_config("medium")
    cpu = PROFILES["cpu"].train
    assert cpu.amp_cpu and cpu.loss == "min_snr" and PROFILES["cpu"].model.widths == PROFILES["quick"].model.widths
    assert not PROFILES["full"].train.amp_cpu and PROFILES["full"].train.loss == "simple"  # the annex stays the annex
    from vaelab.api import ddpm_config
    on_cpu = {"train.device": "cpu"}
    assert ddpm_config(None, "auto", on_cpu).profile == "cpu" and ddpm_config(None, "quick", on_cpu).profile == "quick"


def test_ema_follows_the_weights_with_warmup():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # d_1 = min(0.999, 2 / 11): the first update moves most of the way
    assert ema.shadow["weight"].item() == pytest.approx(1 - 2 / 11)
    for _ in range(5000):
        ema.update(net)
    assert ema.shadow["weight"].item() == pytest.approx(1.0, abs=1e-2)


def test_cpu_bf16_and_min_snr_options_reach_the_run(tmp_path, tiny_data, capsys):
    """--cpu-bf16 trains under bfloat16 autocast on the CPU (close to float32, not equal); --loss min_snr is saved."""
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--cpu-bf16"]), ("snr", ["--loss", "min_snr", "--snr-gamma", "2"])):
        runs[name] = tmp_path / name
        code, _, err = vaelab(capsys, "ddpm", "train", "--profile", "quick", "--epochs", "1", *TINY, *extra,
                              "--out", runs[name], "--data-dir", tiny_data)
        assert code == 0, err
    cfg = {n: load_json(r / "config.json", DDPMConfig) for n, r in runs.items()}
    assert not cfg["fp32"].train.amp_cpu and cfg["bf16"].train.amp_cpu and cfg["fp32"].train.loss == "simple"
    assert cfg["snr"].train.loss == "min_snr" and cfg["snr"].train.snr_gamma == 2.0
    mse = {n: json.loads((r / "metrics.jsonl").read_text())["train_mse"] for n, r in runs.items()}
    assert mse["bf16"] != mse["fp32"] and mse["bf16"] == pytest.approx(mse["fp32"], rel=0.05), mse
    assert mse["snr"] < mse["fp32"]  # every weight is <= 1, most of them well below
    code, _, err = vaelab(capsys, "ddpm", "train", "--profile", "quick", *TINY, "--loss", "min_snr",
                          "--snr-gamma", "0", "--out", tmp_path / "bad", "--data-dir", tiny_data)
    assert code == 2 and "snr_gamma must be a positive" in err and "Traceback" not in err
