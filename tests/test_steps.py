"""The training step: eager on CPU; CUDA-graph replay on a GPU (those tests skip without CUDA)."""

import dataclasses

import pytest
import torch

from vaelab.engine import checkpoint
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data.images import load
from vaelab.vae.models import build_vae
from vaelab.engine.runs import prepare_new, write_config
from vaelab.vae.stacked import train_stacked
from vaelab.engine.steps import GraphedStep, eager, load_optimizer_state, make_optimizer, step_function
from vaelab.vae.train import train_vae, vae_compute

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(device="cpu", epochs=2, beta=1.0, family="conv"):
    return RunConfig(model=ModelConfig(family, "16-32-64" if family == "conv" else "32-64", 3),
                     train=TrainConfig(epochs=epochs, batch_size=64, beta=beta, device=device))


def run(folder, cfg, data, resume=False):
    if not resume:
        prepare_new(folder)
        write_config(folder, cfg)
    return train_vae(folder, cfg, data, resume=resume, log=lambda m: None)


def test_step_function_is_eager_on_cpu():
    model = build_vae("dense", "16-32", 2)
    opt = make_optimizer(model.parameters(), 1e-3)
    step = step_function(vae_compute(model, torch.zeros(8, 1, 28, 28, dtype=torch.uint8), TrainConfig()), opt,
                         torch.device("cpu"), 4)
    assert not isinstance(step, GraphedStep)
    assert step(torch.arange(4)).shape == (3,)


def test_optimizer_state_keeps_the_loaders_own_flags():
    """A run trained with CUDA graphs (capturable Adam) resumes on the CPU (not capturable) and back."""
    model = build_vae("dense", "16-32", 2)
    opt = make_optimizer(model.parameters(), 1e-3)
    eager(lambda idx: (model(torch.rand(4, 1, 28, 28)).logits.sum(),) * 2, opt)(torch.arange(4))
    saved = opt.state_dict()
    saved["param_groups"][0]["capturable"] = True  # as a GPU run saves it
    fresh = make_optimizer(model.parameters(), 1e-3)
    load_optimizer_state(fresh, saved)
    assert fresh.param_groups[0]["capturable"] is False
    eager(lambda idx: (model(torch.rand(4, 1, 28, 28)).logits.sum(),) * 2, fresh)(torch.arange(4))  # steps fine


@cuda
@pytest.mark.parametrize("family,tol", [("dense", 1e-5), ("conv", 2e-3)])
def test_cuda_graph_training_follows_eager_training(tmp_path, tiny_mnist, monkeypatch, family, tol):
    """Same weights, noise and batches: the replayed graph is the eager step. Dense matches to rounding;
    conv within cuDNN's own run-to-run spread (TF32 and algorithm choice differ between launches)."""
    data = load(tiny_mnist)
    graphed = run(tmp_path / "graphed", tiny("cuda", family=family), data)
    monkeypatch.setenv("VAELAB_CUDA_GRAPHS", "0")
    plain = run(tmp_path / "eager", tiny("cuda", family=family), data)
    for a, b in zip(graphed, plain):
        assert a["test_neg_elbo"] == pytest.approx(b["test_neg_elbo"], rel=tol)
    wa = checkpoint.load_weights(tmp_path / "graphed" / checkpoint.WEIGHTS)
    wb = checkpoint.load_weights(tmp_path / "eager" / checkpoint.WEIGHTS)
    assert all(torch.allclose(wa[k], wb[k], atol=10 * tol) for k in wa)


@cuda
def test_cuda_graph_run_resumes_on_cpu(tmp_path, tiny_mnist):
    data = load(tiny_mnist)
    run(tmp_path / "r", tiny("cuda", epochs=1), data)
    cfg = dataclasses.replace(tiny("cpu"), train=dataclasses.replace(tiny("cpu").train, epochs=2))
    history = run(tmp_path / "r", cfg, data, resume=True)
    assert [r["epoch"] for r in history] == [1, 2]


@cuda
def test_stacked_cuda_graph_training_follows_runs_alone(tmp_path, tiny_mnist):
    data = load(tiny_mnist)
    cfgs = [tiny("cuda", beta=b) for b in (0.5, 2.0)]
    alone = [run(tmp_path / f"a{i}", c, data) for i, c in enumerate(cfgs)]
    dirs = [tmp_path / f"t{i}" for i in range(2)]
    for d, c in zip(dirs, cfgs):
        prepare_new(d)
        write_config(d, c)
    together = train_stacked(dirs, cfgs, data, log=lambda m: None)
    for a, t in zip(alone, together):
        assert t[-1]["test_neg_elbo"] == pytest.approx(a[-1]["test_neg_elbo"], rel=1e-3)
