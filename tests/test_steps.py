"""The training step: eager on CPU; CUDA-graph replay on a GPU (those tests skip without CUDA)."""

import copy
import dataclasses
import json
import math

import pytest
import torch

from vaelab.data.images import load
from vaelab.diffusion.config import profile_config
from vaelab.diffusion.train import train_ddpm
from vaelab.engine import checkpoint
from vaelab.engine.loop import fit
from vaelab.engine.runs import prepare_new, write_config
from vaelab.engine.steps import GraphedStep, eager, load_optimizer_state, make_optimizer, set_lr, step_function
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.networks import build_vae
from vaelab.vae.stacked import train_stacked
from vaelab.vae import train as vae_train
from vaelab.vae.train import train_vae, vae_compute

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(device="cpu", epochs=2, beta=1.0, family="conv"):
    return VAEConfig(model=VAEModelConfig(family, "16-32-64" if family == "conv" else "32-64", 3),
                     train=VAETrainConfig(epochs=epochs, batch_size=64, beta=beta, device=device))


def run(folder, cfg, data, resume=False):
    if not resume:
        prepare_new(folder)
        write_config(folder, cfg)
    return train_vae(folder, cfg, data, resume=resume, log=lambda m: None)


def test_step_function_is_eager_on_cpu():
    model = build_vae("dense", "16-32", 2)
    opt = make_optimizer(model.parameters(), 1e-3)
    step = step_function(vae_compute(model, torch.zeros(8, 1, 28, 28, dtype=torch.uint8), VAETrainConfig()), opt,
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
    data = load("mnist", tiny_mnist)
    graphed = run(tmp_path / "graphed", tiny("cuda", family=family), data)
    monkeypatch.setenv("VAELAB_CUDA_GRAPHS", "0")
    plain = run(tmp_path / "eager", tiny("cuda", family=family), data)
    for a, b in zip(graphed, plain):
        assert a["test_neg_elbo"] == pytest.approx(b["test_neg_elbo"], rel=tol)
    wa = checkpoint.load_weights(tmp_path / "graphed" / checkpoint.WEIGHTS)
    wb = checkpoint.load_weights(tmp_path / "eager" / checkpoint.WEIGHTS)
    assert all(torch.allclose(wa[k], wb[k], atol=10 * tol) for k in wa)


def resume_on_cpu_from_exactly_the_checkpoint(tmp_path, data, monkeypatch, first_device):
    """Train one epoch on `first_device`, resume the second on the CPU: the CPU epoch starts from exactly the
    saved weights and Adam moments (caught as the loop starts), keeps the first epoch's record, and learns."""
    run(tmp_path / "r", tiny(first_device, epochs=1), data)
    saved_w = checkpoint.load_weights(tmp_path / "r" / checkpoint.WEIGHTS)
    saved = checkpoint.load_state(tmp_path / "r")
    first = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    start = {}

    def spy(family, *args, **kw):  # the loop as the resumed run enters it: weights and optimizer as restored
        weights, opt_state, _ = family.state(0)
        start["weights"] = {k: v.detach().clone() for k, v in weights.items()}
        start["optimizer"] = copy.deepcopy(opt_state)
        return fit(family, *args, **kw)

    monkeypatch.setattr(vae_train, "fit", spy)
    cfg = dataclasses.replace(tiny("cpu"), train=dataclasses.replace(tiny("cpu").train, epochs=2))
    history = run(tmp_path / "r", cfg, data, resume=True)
    assert [r["epoch"] for r in history] == [1, 2]
    assert saved_w.keys() == start["weights"].keys()
    for k, w in start["weights"].items():
        assert w.device.type == "cpu" and torch.equal(w, saved_w[k]), k
    moments = [(i, name) for i, st in saved["optimizer"]["state"].items() for name in ("exp_avg", "exp_avg_sq")]
    assert moments and start["optimizer"]["state"].keys() == saved["optimizer"]["state"].keys()
    for i, name in moments:
        got = start["optimizer"]["state"][i][name]
        assert got.device.type == "cpu" and torch.equal(got, saved["optimizer"]["state"][i][name].cpu()), (i, name)
    assert history[0] == first  # the first epoch's record is carried over as it was saved
    assert math.isfinite(history[1]["train_loss"]) and history[1]["train_loss"] < history[0]["train_loss"]
    after = checkpoint.load_weights(tmp_path / "r" / checkpoint.WEIGHTS)
    assert not all(torch.equal(after[k], saved_w[k]) for k in after)  # the CPU epoch trained


@cuda
def test_cuda_graph_run_resumes_on_cpu(tmp_path, tiny_mnist, monkeypatch):
    resume_on_cpu_from_exactly_the_checkpoint(tmp_path, load("mnist", tiny_mnist), monkeypatch, "cuda")


def test_cpu_run_resumes_from_exactly_the_checkpoint(tmp_path, tiny_mnist, monkeypatch):
    """The same check with a CPU first epoch: it runs everywhere, so the check itself is tested without a GPU."""
    resume_on_cpu_from_exactly_the_checkpoint(tmp_path, load("mnist", tiny_mnist), monkeypatch, "cpu")


@cuda
def test_stacked_cuda_graph_training_follows_runs_alone(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    cfgs = [tiny("cuda", beta=b) for b in (0.5, 2.0)]
    alone = [run(tmp_path / f"a{i}", c, data) for i, c in enumerate(cfgs)]
    dirs = [tmp_path / f"t{i}" for i in range(2)]
    for d, c in zip(dirs, cfgs):
        prepare_new(d)
        write_config(d, c)
    together = train_stacked(dirs, cfgs, data, log=lambda m: None)
    for a, t in zip(alone, together):
        assert t[-1]["test_neg_elbo"] == pytest.approx(a[-1]["test_neg_elbo"], rel=1e-3)


def test_step_hooks_run_in_order_around_and_inside_the_step():
    """before() and after() wrap every step; clip() runs between backward and Adam (inside a graph on CUDA)."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([w], 0.1)
    events = []

    def compute(idx):
        events.append("compute")
        loss = (w * 2).sum()
        return loss, loss.detach().reshape(1)

    def clip():
        events.append(("clip", w.grad.tolist()))  # gradients exist, weights not yet moved
        assert w.tolist() == [1.0, 1.0, 1.0]

    step = step_function(compute, opt, torch.device("cpu"), 4, clip=clip,
                         before=lambda: events.append("before"), after=lambda: events.append(("after", w.tolist())))
    step(torch.arange(4))
    assert events[:3] == ["before", "compute", ("clip", [2.0, 2.0, 2.0])]
    assert events[3][0] == "after" and events[3][1][0] < 1.0  # Adam has stepped before after() runs


def test_a_schedule_sets_the_lr_of_float_and_tensor_optimizers():
    w = torch.nn.Parameter(torch.ones(2))
    opt = make_optimizer([w], 1e-3)
    set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] == 5e-4
    opt_t = torch.optim.Adam([w], lr=torch.tensor(1e-3))  # what make_optimizer builds for a CUDA graph
    set_lr(opt_t, 5e-4)
    lr = opt_t.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(5e-4)  # the same tensor, set in place


@cuda
def test_ddpm_cuda_graph_training_follows_eager_training(tmp_path, tiny_mnist, monkeypatch):
    """The DDPM's step (tensor lr set before each replay, EMA after it, clipping inside) replayed as a graph
    trains like the eager step."""
    data = load("mnist", tiny_mnist)
    cfg = profile_config("quick", {"model.widths": "4-8", "schedule.timesteps": 50, "train.device": "cuda",
                                   "train.batch_size": 32, "train.epochs": 2, "train.amp": False})
    histories = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("VAELAB_CUDA_GRAPHS", graphs)
        prepare_new(tmp_path / graphs)
        histories[graphs] = train_ddpm(tmp_path / graphs, cfg, data, log=lambda m: None)
    for a, b in zip(histories["1"], histories["0"]):
        assert a["steps"] == b["steps"]
        assert a["test_mse_ema"] == pytest.approx(b["test_mse_ema"], rel=2e-2)
