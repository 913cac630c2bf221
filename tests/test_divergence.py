"""Divergence: an epoch whose loss jumps stops training (exit 5) or rolls back at half the learning rate."""

import json
import math

import pytest
import torch

from vaelab.api import fit_run
from vaelab.cli.main import main
from vaelab.diffusion.train import DDPMFamily
from vaelab.engine import checkpoint
from vaelab.engine.loop import MAX_ROLLBACKS, check_divergence
from vaelab.errors import TrainingDiverged, VaelabError
from vaelab.vae.config import VAEConfig, VAEModelConfig, VAETrainConfig
from vaelab.vae.train import VAEFamily

pytestmark = pytest.mark.faults

BOMB = 0.3  # a learning rate that, planted after epoch 2, makes the tiny VAE's epoch-3 loss jump (finite)


def cfg(epochs=5, **train):
    return VAEConfig(model=VAEModelConfig("dense", "16-32", 2),
                     train=VAETrainConfig(epochs=epochs, batch_size=32, device="cpu", **train)).validate()


@pytest.fixture
def planted(monkeypatch):
    """After epoch 2 (and only while no rollback has lowered it), the learning rate is set to BOMB."""
    def plant(family_cls, lr=BOMB, every_time=False):
        original = family_cls.after_epoch

        def after_epoch(self, epoch, *args):
            original(self, epoch, *args)
            if epoch == 1 and (every_time or self.lr_scale == 1.0):
                for group in self.opt.param_groups:
                    group["lr"] = lr if not isinstance(group["lr"], torch.Tensor) else torch.tensor(lr)
        monkeypatch.setattr(family_cls, "after_epoch", after_epoch)
    return plant


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_rule_compares_with_the_best_past_epoch_and_never_fires_first():
    h = [[{"train_loss": 100.0}, {"train_loss": 80.0}]]
    assert check_divergence(h, [{"train_loss": 239.0}], "train_loss", 3.0, 2) is None
    d = check_divergence(h, [{"train_loss": 241.0}], "train_loss", 3.0, 2)
    assert (d.run, d.epoch, d.loss, d.best) == (0, 2, 241.0, 80.0)
    assert "241" in d.describe() and "3.0x" in d.describe() and "epoch 3" in d.describe()
    assert check_divergence([[]], [{"train_loss": 1e9}], "train_loss", 3.0, 0) is None  # nothing to compare
    assert check_divergence(h, [{"train_loss": 1e9}], "train_loss", 0.0, 2) is None  # 0: off
    two = [[{"train_loss": 1.0}], [{"train_loss": 1.0}]]
    assert check_divergence(two, [{"train_loss": 1.0}, {"train_loss": 5.0}], "train_loss", 3.0, 1).run == 1


@pytest.mark.parametrize("factor, action", [(1.0, "stop"), (-2.0, "stop"), (math.inf, "stop"), (3.0, "retry")])
def test_impossible_options_are_refused(factor, action):
    with pytest.raises(VaelabError, match="divergence"):
        cfg(divergence_factor=factor, on_divergence=action)


def test_stop_keeps_the_last_good_checkpoint_and_says_how_to_go_on(tmp_path, tiny_mnist, planted):
    planted(VAEFamily)
    with pytest.raises(TrainingDiverged) as e:
        fit_run("vae", tmp_path / "r", cfg(), data_dir=tiny_mnist, log=lambda m: None)
    message = str(e.value)
    assert "epoch 3" in message and "the best epoch's" in message and "x the" in message
    assert "checkpoint of epoch 2 is kept" in message and "--resume --on-divergence rollback" in message
    assert checkpoint.load_state(tmp_path / "r")["epoch"] == 2 and len(history(tmp_path / "r")) == 2


def test_the_cli_exits_with_code_5_and_one_line(tmp_path, tiny_mnist, planted, capsys):
    planted(VAEFamily)
    code = main(["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--batch-size", "32",
                 "--epochs", "4", "--device", "cpu", "--out", str(tmp_path / "r"), "--data-dir", str(tiny_mnist)])
    err = capsys.readouterr().err
    assert code == 5 and "vaelab: error:" in err and "training diverged" in err and "Traceback" not in err


def test_rollback_goes_back_halves_the_rate_and_records_it(tmp_path, tiny_mnist, planted):
    planted(VAEFamily)
    _, h = fit_run("vae", tmp_path / "r", cfg(on_divergence="rollback"), data_dir=tiny_mnist, log=lambda m: None)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5] and history(tmp_path / "r") == h
    (event,) = h[2]["rollbacks"]
    assert event["lr_scale"] == 0.5 and event["loss"] > 3 * event["best"]
    assert all("rollbacks" not in r for r in h[:2] + h[3:])
    assert checkpoint.load_state(tmp_path / "r")["lr_scale"] == 0.5
    assert h[2]["train_loss"] < 3 * min(r["train_loss"] for r in h[:2])


def test_rollback_resumes_with_the_lowered_rate_bit_for_bit(tmp_path, tiny_mnist, planted):
    planted(VAEFamily)
    fit_run("vae", tmp_path / "a", cfg(on_divergence="rollback"), data_dir=tiny_mnist, log=lambda m: None)
    fit_run("vae", tmp_path / "b", cfg(epochs=3, on_divergence="rollback"), data_dir=tiny_mnist, log=lambda m: None)
    fit_run("vae", tmp_path / "b", None, epochs=5, data_dir=tiny_mnist, log=lambda m: None)
    wa, wb = (checkpoint.load_weights(tmp_path / r / checkpoint.WEIGHTS) for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    drop = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert drop(history(tmp_path / "a")) == drop(history(tmp_path / "b"))


def test_a_stopped_run_resumed_with_rollback_finishes(tmp_path, tiny_mnist, planted, capsys):
    planted(VAEFamily)
    with pytest.raises(TrainingDiverged):
        fit_run("vae", tmp_path / "r", cfg(), data_dir=tiny_mnist, log=lambda m: None)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]["on_divergence"]
    # the bomb went off in the stopped process; the resumed one trains on from the good checkpoint
    code = main(["train", "--out", str(tmp_path / "r"), "--resume", "--on-divergence", "rollback",
                 "--data-dir", str(tiny_mnist)])
    assert saved == "stop" and code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["on_divergence"] == "rollback"
    assert [r["epoch"] for r in history(tmp_path / "r")] == [1, 2, 3, 4, 5]


def test_rollback_gives_up_after_max_rollbacks(tmp_path, tiny_mnist, planted):
    planted(VAEFamily, every_time=True)
    original = VAEFamily.make_step

    def make_step(self):  # every rollback lands on the bomb again
        original(self)
        if self.lr_scale < 1:
            for group in self.opt.param_groups:
                group["lr"] = BOMB
    VAEFamily.make_step = make_step
    try:
        with pytest.raises(TrainingDiverged, match=f"still after {MAX_ROLLBACKS} rollbacks"):
            fit_run("vae", tmp_path / "r", cfg(on_divergence="rollback"), data_dir=tiny_mnist, log=lambda m: None)
    finally:
        VAEFamily.make_step = original
    assert checkpoint.load_state(tmp_path / "r")["epoch"] == 2


def test_a_nan_rolls_back_too(tmp_path, tiny_mnist, planted):
    planted(VAEFamily, lr=1e3)  # the loss turns NaN within the epoch
    _, h = fit_run("vae", tmp_path / "r", cfg(epochs=4, on_divergence="rollback"), data_dir=tiny_mnist,
                   log=lambda m: None)
    assert h[2]["rollbacks"] == [{"loss": None, "best": None, "lr_scale": 0.5}]
    assert all(math.isfinite(r["train_loss"]) for r in h)


def test_the_ddpm_rolls_back_with_its_warmup_scaled(tmp_path, tiny_mnist, monkeypatch):
    from vaelab.api import ddpm_config
    from vaelab.engine.steps import set_lr
    seen, original = [], DDPMFamily.warmup_lr

    def warmup_lr(self):  # its schedule sets the rate before every step: the bomb is planted there, from step 9
        original(self)
        seen.append(self.lr_scale)
        if self.ema.updates >= 8 and self.lr_scale == 1.0:
            set_lr(self.opt, 50.0)
    monkeypatch.setattr(DDPMFamily, "warmup_lr", warmup_lr)
    c = ddpm_config(None, "quick", {"model.widths": "4-8", "schedule.timesteps": 50, "train.batch_size": 64,
                                    "train.epochs": 4, "train.device": "cpu", "train.warmup_steps": 0,
                                    "train.grad_clip": 0.0, "train.on_divergence": "rollback"})
    _, h = fit_run("ddpm", tmp_path / "d", c, data_dir=tiny_mnist, log=lambda m: None)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and h[2]["rollbacks"][0]["lr_scale"] == 0.5
    assert seen[-1] == 0.5 and checkpoint.load_state(tmp_path / "d")["lr_scale"] == 0.5
