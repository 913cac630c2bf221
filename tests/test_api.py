"""The Python API (`import vaelab`): the CLI's run folders, tensors in and out, clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vaelab
from vaelab.cli.main import main
from vaelab.engine.checkpoint import load_weights
from vaelab.errors import VaelabError
from vaelab.handles import as_images, slerp
from vaelab.vae.sample import vae_samples

TINY_VAE = dict(model="dense", arch="16-32", latent_dim=2, epochs=1, batch_size=64, device="cpu")


@pytest.fixture
def vae(tmp_path, tiny_mnist):
    """A tiny dense VAE trained for one epoch through the API."""
    return vaelab.train(out=tmp_path / "api", data_dir=tiny_mnist, **TINY_VAE)


def test_the_public_surface():
    assert set(vaelab.__all__) == {"__version__", "datasets", "load", "train", "train_ddpm", "evaluate", "score",
                                   "VAEModel", "DDPMModel"}
    assert all(getattr(vaelab, name).__doc__ for name in vaelab.__all__ if name != "__version__")


def test_train_writes_the_same_run_folder_as_the_cli(vae, tmp_path, tiny_mnist):
    cli = tmp_path / "cli"
    assert main(["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--epochs", "1",
                 "--batch-size", "64", "--device", "cpu", "--out", str(cli), "--data-dir", str(tiny_mnist)]) == 0
    a, b = (json.loads((p / "config.json").read_text()) for p in (vae.path, cli))
    assert {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}
    wa, wb = (load_weights(p / "model.safetensors", vae.network.state_dict()) for p in (vae.path, cli))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed, same bits
    assert isinstance(vae, vaelab.VAEModel) and vae.config["model"]["arch"] == "16-32"
    assert len(vae.history) == 1 and vae.metrics is None
    assert "dense 16-32, latent 2" in repr(vae)


def test_a_loaded_vae_encodes_decodes_samples_and_interpolates(vae, tiny_mnist):
    data = vaelab.datasets.load("mnist", tiny_mnist)
    x = data.test_x[:4]  # uint8 (4, 1, 28, 28)
    run = vaelab.load(vae.path)
    mu, logvar = run.encode(x)
    assert mu.shape == logvar.shape == (4, 2)
    assert torch.equal(mu, run.network.encode(vaelab.datasets.as_float(x))[0].detach())
    assert run.decode(mu).shape == (4, 1, 28, 28) and run.decode(mu[0]).shape == (1, 1, 28, 28)
    assert torch.equal(run.reconstruct(x), run.decode(mu))
    assert torch.equal(run.sample(6, seed=1), vae_samples(run.network, 6, 1))  # evaluate's draw for a seed
    assert not torch.equal(run.sample(6, seed=1), run.sample(6, seed=2))
    path = run.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 1, 28, 28)
    assert torch.allclose(path[0], run.reconstruct(x[0])[0]) and torch.allclose(path[-1], run.reconstruct(x[1])[0])
    assert run.interpolate(x[0], x[1], steps=3, mode="slerp").shape == (3, 1, 28, 28)
    with pytest.raises(VaelabError, match="z must be"):
        run.decode(torch.zeros(3, 5))
    with pytest.raises(VaelabError, match="lerp"):
        run.interpolate(x[0], x[1], mode="cubic")


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    r = torch.tensor([[0.0], [0.5], [1.0]])
    s = slerp(a, b, r)
    assert torch.allclose(s.norm(dim=1), torch.ones(3))
    assert torch.allclose(s[1], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    assert torch.allclose(slerp(a, a, r), a.expand(3, 2))  # parallel: no division by sin(0)


def test_images_in_every_common_layout_and_refused_otherwise():
    u8 = np.arange(784, dtype=np.uint8).reshape(28, 28)
    assert torch.equal(as_images(u8), torch.from_numpy(u8).float()[None, None] / 255)
    assert as_images(torch.rand(3, 784)).shape == (3, 1, 28, 28)
    assert as_images(torch.rand(3, 28, 28)).shape == (3, 1, 28, 28)
    for bad, msg in ((torch.rand(2, 3, 28, 28), "must be"), (torch.full((2, 28, 28), 1.5), "in \\[0, 1\\]"),
                     (torch.full((2, 28, 28), float("nan")), "finite")):
        with pytest.raises(VaelabError, match=msg):
            as_images(bad)


def test_train_refuses_unknown_options_and_a_changed_config_on_resume(vae, tiny_mnist):
    with pytest.raises(VaelabError, match="unknown option"):
        vaelab.train(out=vae.path.parent / "x", laten_dim=3)
    with pytest.raises(VaelabError, match="model must be"):
        vaelab.train(out=vae.path.parent / "x", model="transformer")
    with pytest.raises(VaelabError, match="only epochs"):
        vaelab.train(out=vae.path, resume=True, beta=2.0)
    resumed = vaelab.train(out=vae.path, resume=True, epochs=2, data_dir=tiny_mnist)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_datasets_as_tensors(tiny_mnist):
    assert vaelab.datasets.names() == ["mnist", "fashion-mnist"]
    data = vaelab.datasets.load("mnist", tiny_mnist)
    assert data.train_x.shape == (256, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_y.shape == (64,) and vaelab.datasets.describe("fashion-mnist").num_classes == 10


def test_a_ddpm_trains_loads_and_samples(tmp_path, tiny_mnist):
    ddpm = vaelab.train_ddpm(out=tmp_path / "ddpm", profile="quick", data_dir=tiny_mnist, train__epochs=1,
                             model__widths="4-8", schedule__timesteps=50, train__batch_size=64, train__device="cpu")
    assert isinstance(ddpm, vaelab.DDPMModel) and ddpm.config["model"]["widths"] == "4-8"
    cli = tmp_path / "cli"  # the CLI's run folder for the same settings: the same files, the same weights
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "1", "--widths", "4-8", "--timesteps", "50",
                 "--batch-size", "64", "--device", "cpu", "--out", str(cli), "--data-dir", str(tiny_mnist)]) == 0
    assert {p.name for p in cli.iterdir()} == {p.name for p in ddpm.path.iterdir()}
    assert (ddpm.path / "samples.png").is_file()
    a, b = (load_weights(d / "model.safetensors") for d in (cli, ddpm.path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = vaelab.load(ddpm.path).sample(3, sampler="ddim", steps=5, seed=0)
    assert x.shape == (3, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, ddpm.sample(3, sampler="ddim", steps=5, seed=0))
    with pytest.raises(VaelabError):
        vaelab.load(tmp_path / "nothing")
