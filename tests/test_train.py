"""Training: loss goes down, same seed same numbers, exact resume, divergence stops cleanly."""

import dataclasses
import json
import math

import pytest
import torch

from vaelab.engine import checkpoint
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.data.images import load
from vaelab.errors import RunError, TrainingDiverged
from vaelab.engine.runs import prepare_new, write_config
from vaelab.vae.run import open_vae
from vaelab.vae.networks import build_vae
from vaelab.vae import train as T
from vaelab.vae.train import train_vae, vae_compute

TINY = VAEConfig(model=VAEModelConfig("dense", "32-64", 2), train=VAETrainConfig(epochs=3, batch_size=64, device="cpu"))


def train(run_dir, data, cfg=TINY, resume=False):
    if not resume:
        prepare_new(run_dir)
        write_config(run_dir, cfg)
    return train_vae(run_dir, cfg, data, resume=resume, check_every=2, log=lambda m: None)


def weights(run_dir):
    return checkpoint.load_weights(run_dir / checkpoint.WEIGHTS)


def test_loss_decreases_and_metrics_are_written(tmp_path, tiny_mnist):
    hist = train(tmp_path / "r", load("mnist", tiny_mnist))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
    rec = json.loads(lines[-1])
    assert rec["test_neg_elbo"] == pytest.approx(rec["test_recon"] + rec["test_kl"])
    assert open_vae(tmp_path / "r", "cpu").cfg == TINY


def test_same_seed_same_numbers(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    h1, h2 = train(tmp_path / "a", data), train(tmp_path / "b", data)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(h1) == strip(h2)
    w1, w2 = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_resume_is_bit_exact(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    full = train(tmp_path / "full", data)
    part = tmp_path / "part"
    short = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, epochs=1))
    train(part, data, short)
    resumed = train(part, data, TINY, resume=True)
    assert [r["test_loss"] for r in resumed] == [r["test_loss"] for r in full]
    w1, w2 = weights(tmp_path / "full"), weights(part)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_nan_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path, tiny_mnist, monkeypatch):
    data = load("mnist", tiny_mnist)
    run = tmp_path / "r"
    train(run, data, dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, epochs=1)))
    before = (run / checkpoint.WEIGHTS).read_bytes()
    calls = {"n": 0}
    real = T.elbo_terms

    def poisoned(*a, **k):
        terms = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step of epoch 2
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(T, "elbo_terms", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 3"):
        train(run, data, TINY, resume=True)
    assert (run / checkpoint.WEIGHTS).read_bytes() == before
    assert checkpoint.load_state(run)["epoch"] == 1


def test_new_run_refuses_existing_folder(tmp_path, tiny_mnist):
    train(tmp_path / "r", load("mnist", tiny_mnist))
    with pytest.raises(RunError, match="already holds a run"):
        prepare_new(tmp_path / "r")


def test_bf16_forward_runs_under_autocast():
    """--precision bf16: the step's forward runs in bfloat16 (an encoder output, seen by a hook), the loss in fp32."""
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = build_vae("dense", "32-64", 2)
        seen = []
        model.encoder.fc_mu.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        model.decoder.fc_out.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        loss, record = vae_compute(model, x, VAETrainConfig(precision=precision, device="cpu"))(torch.arange(64))
        assert seen == [dtype, dtype], precision
        assert loss.dtype == torch.float32 and record.dtype == torch.float32 and torch.isfinite(record).all()


def test_bf16_run_trains_close_to_fp32_but_not_identically(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    bf16 = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, precision="bf16"))
    full, half = train(tmp_path / "fp32", data), train(tmp_path / "bf16", data, bf16)
    assert half[-1]["train_loss"] < half[0]["train_loss"]  # it learns
    for a, b in zip(full, half):
        for key in ("train_loss", "train_recon", "test_neg_elbo", "test_recon"):
            assert math.isfinite(b[key]) and b[key] != a[key], (b["epoch"], key)  # bf16 rounding shows
            assert b[key] == pytest.approx(a[key], rel=0.05), (b["epoch"], key)
    assert open_vae(tmp_path / "bf16", "cpu").cfg.train.precision == "bf16"
