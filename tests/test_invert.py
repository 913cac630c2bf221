"""DDIM inversion: x0 -> x_T -> x0 with a tiny UNet (known answer: DDIM's own output inverts to its noise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaelab.diffusion.config import DDPMConfig, UNetConfig
from vaelab.diffusion.invert import ddim_forward_step, ddim_invert, inversion_steps
from vaelab.diffusion.sample import eps_model, sample_loop
from vaelab.diffusion.schedule import NoiseSchedule, ddim_step
from vaelab.diffusion.run import DDPMRun
from vaelab.diffusion.networks import UNet
from vaelab.errors import VaelabError
from vaelab.handles import DDPMModel

S = NoiseSchedule("linear", 1000)


def tiny_eps():
    """A randomly initialised tiny UNet as eps(x_t, t) on the CPU."""
    torch.manual_seed(0)
    return eps_model(UNet("4-8", 8).eval(), torch.device("cpu"))


def ddim_then_invert(eps, steps: int) -> float:
    """Relative error ||invert(DDIM(x_T)) - x_T|| / ||x_T|| over the same `steps` steps (x0 taken before the clip)."""
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    kept = {}
    sample_loop(S, eps, x_T, "ddim", steps, 0.0, keep=lambda t, x: kept.__setitem__(t, x))
    back = ddim_invert(S, eps, kept[-1], steps)
    return float((back - x_T).norm() / x_T.norm())


def test_inverting_ddim_output_returns_its_noise_and_the_error_shrinks_with_steps():
    eps = tiny_eps()
    errors = [ddim_then_invert(eps, n) for n in (5, 20, 80)]
    assert errors[2] < 5e-3, errors  # small: measured 1.4e-3 at 100 steps
    assert errors[0] > errors[1] * 2 > errors[2] * 4, errors  # about 1/S: the Euler step's error


def test_inversion_visits_the_samplers_steps_in_increasing_order():
    pairs = inversion_steps(1000, 5)
    assert pairs == [(-1, 0), (0, 250), (250, 500), (500, 749), (749, 999)]
    assert inversion_steps(1000, 1) == [(-1, 999)]


def test_forward_step_undoes_a_ddim_step_with_the_same_eps():
    # with the eps the sampling step used, the forward step is its exact inverse (arithmetic only)
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(2, 1, 28, 28, generator=g), torch.randn(2, 1, 28, 28, generator=g)
    for t, t_prev in ((500, 250), (10, 0), (0, -1)):
        x_prev = ddim_step(S, eps, t, t_prev, x_t, eta=0.0)
        torch.testing.assert_close(ddim_forward_step(S, eps, t_prev, t, x_prev), x_t, rtol=1e-4, atol=1e-4)


def tiny_ddpm() -> DDPMModel:
    """A DDPMModel around an untrained tiny UNet (no run folder needed)."""
    cfg = DDPMConfig(model=UNetConfig(widths="4-8", time_dim=8))
    torch.manual_seed(0)
    return DDPMModel(DDPMRun(Path("."), cfg, UNet("4-8", 8).eval(), NoiseSchedule("linear", 1000), [],
                             torch.device("cpu"), True))


def test_handle_inverts_images_and_decodes_them_back():
    m = tiny_ddpm()
    x = torch.rand(2, 28, 28, generator=torch.Generator().manual_seed(4)) * 0.02 + 0.49  # near mid-grey: no clip
    x_T = m.invert(x, steps=40)
    assert x_T.shape == (2, 1, 28, 28)
    back = m.decode_latent(x_T, steps=40)
    assert back.shape == (2, 1, 28, 28) and 0 <= float(back.min()) and float(back.max()) <= 1
    assert float((back[:, 0] - x).abs().max()) < 0.05
    with pytest.raises(VaelabError):
        m.decode_latent(torch.zeros(2, 3, 28, 28))


def test_the_cli_inverts_a_runs_test_images_and_reports_the_round_trip(tmp_path, tiny_mnist, capsys):
    import numpy as np
    from vaelab.cli.main import main
    run = tmp_path / "ddpm"
    assert main(["ddpm", "train", "--profile", "quick", "--epochs", "1", "--widths", "4-8", "--timesteps", "50",
                 "--batch-size", "64", "--device", "cpu", "--out", str(run), "--data-dir", str(tiny_mnist)]) == 0
    capsys.readouterr()
    assert main(["ddpm", "invert", str(run), "--n", "4", "--steps", "5", "--data-dir", str(tiny_mnist)]) == 0
    out = capsys.readouterr().out
    assert "round trip x0 -> x_T -> x0: RMSE" in out
    assert np.load(run / "x_T_ddim5.npy").shape == (4, 1, 28, 28)
    assert main(["ddpm", "invert", str(tmp_path / "none")]) == 4  # not a run: one line, exit code 4
