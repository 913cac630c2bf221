"""--tensorboard: the event files hold the loop's records, the epoch metrics, images and the config."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from vaelab.cli.main import main

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install 'vaelab[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = ["--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--batch-size", "64", "--device", "cpu"]
STEPS = 4  # 256 training images of the tiny MNIST in batches of 64


def events(run: Path) -> EventAccumulator:
    """All the events under RUN/tb, loaded."""
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    """step -> value of one scalar tag (a step logged twice would keep only the last: checked by callers)."""
    return {e.step: e.value for e in acc.Scalars(tag)}


def history(run: Path) -> list[dict]:
    """metrics.jsonl of a run."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_logs_every_step_every_epoch_images_and_config(tmp_path, tiny_mnist):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run), "--data-dir", str(tiny_mnist), "--tensorboard"]) == 0
    acc = events(run)
    loss = acc.Scalars("train_step/loss")
    assert [e.step for e in loss] == list(range(1, 2 * STEPS + 1))  # every step once
    assert {"train_step/recon", "train_step/kl", "epoch/train_loss", "epoch/test_neg_elbo", "epoch/lr",
            "epoch/images_per_second"} <= set(acc.Tags()["scalars"])
    h = history(run)
    for e, rec in enumerate(h):
        assert scalars(acc, "epoch/test_neg_elbo")[(e + 1) * STEPS] == pytest.approx(rec["test_neg_elbo"], rel=1e-6)
        # the epoch's train loss is the image-weighted mean of its steps (the last batch is as large here)
        steps = [v.value for v in loss[e * STEPS:(e + 1) * STEPS]]
        assert sum(steps) / STEPS == pytest.approx(rec["train_loss"], rel=1e-5)
    assert list(scalars(acc, "epoch/lr").values()) == pytest.approx([1e-3, 1e-3])
    assert len(acc.Images("samples")) == 2 and len(acc.Images("reconstructions (top: test images)")) == 2
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n"))["model"]["arch"] == "16-32"


def test_a_resumed_run_logs_each_step_once(tmp_path, tiny_mnist):
    run = tmp_path / "run"
    common = ["--out", str(run), "--data-dir", str(tiny_mnist), "--tensorboard"]
    assert main(["train", *TINY, "--epochs", "1", *common]) == 0
    from torch.utils.tensorboard import SummaryWriter  # an epoch 2 that crashed after logging two steps
    crashed = SummaryWriter(str(run / "tb"))
    for step in (STEPS + 1, STEPS + 2):
        crashed.add_scalar("train_step/loss", 999.0, step)
    crashed.close()
    assert main(["train", "--resume", "--epochs", "3", *common]) == 0
    loss = events(run).Scalars("train_step/loss")
    assert [e.step for e in loss] == list(range(1, 3 * STEPS + 1))
    assert 999.0 not in [e.value for e in loss]  # the crashed epoch's events were purged, not shown twice
    assert sorted(scalars(events(run), "epoch/test_neg_elbo")) == [STEPS, 2 * STEPS, 3 * STEPS]


def test_runs_trained_together_each_get_their_own_logs(tmp_path, tiny_mnist):
    runs = []
    for beta in (0.5, 2.0):
        run = tmp_path / f"beta{beta}"
        cfg = {"kind": "vae", "dataset": "mnist", "model": {"family": "dense", "arch": "16-32", "latent_dim": 2},
               "train": {"epochs": 1, "batch_size": 64, "beta": beta, "device": "cpu"}}
        run.mkdir()
        (run / "config.json").write_text(json.dumps(cfg))
        runs.append(run)
    assert main(["train-together", *map(str, runs), "--data-dir", str(tiny_mnist), "--tensorboard"]) == 0
    for run in runs:
        acc = events(run)
        assert scalars(acc, "epoch/train_loss")[STEPS] == pytest.approx(history(run)[0]["train_loss"], rel=1e-6)
        kl_steps = [e.value for e in acc.Scalars("train_step/kl")]
        assert len(kl_steps) == STEPS and len(acc.Images("samples")) == 1
        assert sum(kl_steps) / STEPS == pytest.approx(history(run)[0]["train_kl"], rel=1e-5)  # its own steps
    kl = [scalars(events(r), "epoch/train_kl")[STEPS] for r in runs]
    assert kl[0] != kl[1]  # each run's own numbers, not run 0's twice


def test_without_tensorboard_the_flag_says_how_to_install_it(tmp_path, tiny_mnist, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run), "--data-dir", str(tiny_mnist),
                 "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vaelab[tensorboard]'" in err and "Traceback" not in err
    assert not (run / "model.safetensors").exists()  # refused before any work


def test_logging_changes_no_number(tmp_path, tiny_mnist):
    from safetensors.torch import load_file
    runs = {flag: tmp_path / f"run{flag}" for flag in (True, False)}
    for flag, run in runs.items():
        assert main(["train", *TINY, "--epochs", "2", "--out", str(run), "--data-dir", str(tiny_mnist),
                     *(["--tensorboard"] if flag else [])]) == 0
    a, b = (load_file(str(r / "model.safetensors")) for r in runs.values())
    assert all((a[k] == b[k]).all() for k in a)
    assert [h["test_neg_elbo"] for h in history(runs[True])] == [h["test_neg_elbo"] for h in history(runs[False])]


SPEC = """
name = "tb"
tensorboard = true
[base]
model.family = "dense"
model.arch = "16-32"
model.latent_dim = 2
train.epochs = 1
train.batch_size = 64
train.device = "cpu"
[grid]
"train.beta" = [0.5, 2.0]
"""


@pytest.mark.parametrize("how", ["spec", "flag"])
def test_a_sweep_logs_every_run_side_by_side(tmp_path, tiny_mnist, how):
    spec = tmp_path / "tb.toml"
    spec.write_text(SPEC if how == "spec" else SPEC.replace("tensorboard = true\n", ""))
    out = tmp_path / "sweep"
    flag = ["--tensorboard"] if how == "flag" else []
    assert main(["sweep", str(spec), "--out", str(out), "--data-dir", str(tiny_mnist), "--no-evaluate",
                 "--together", "never", *flag]) == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        assert scalars(events(run), "epoch/train_loss")[STEPS] == pytest.approx(history(run)[0]["train_loss"], rel=1e-6)


def test_a_spec_with_a_bad_tensorboard_value_is_refused():
    from vaelab.studies.spec import parse_spec
    with pytest.raises(Exception, match="tensorboard must be true or false"):
        parse_spec(SPEC.replace("tensorboard = true", 'tensorboard = "yes"'))


def test_ddpm_train_logs_its_steps_warmup_lr_and_samples(tmp_path, tiny_mnist):
    run = tmp_path / "ddpm"
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "2", "--widths", "4-8", "--timesteps", "50",
                 "--batch-size", "64", "--device", "cpu", "--out", str(run), "--data-dir", str(tiny_mnist),
                 "--tensorboard"]) == 0
    acc = events(run)
    assert [e.step for e in acc.Scalars("train_step/mse")] == list(range(1, 2 * STEPS + 1))
    lr = scalars(acc, "epoch/lr")
    assert lr[STEPS] < lr[2 * STEPS]  # the warm-up: the learning rate rises with the steps
    for e, rec in enumerate(history(run)):
        assert scalars(acc, "epoch/test_mse_ema")[(e + 1) * STEPS] == pytest.approx(rec["test_mse_ema"], rel=1e-6)
    assert len(acc.Images("samples (EMA weights)")) == 2
