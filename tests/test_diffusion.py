"""The noise process, the samplers' step rules (arithmetic) and the sampling loop, against closed forms."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.diffusion.sample import sample_loop
from vaelab.diffusion.schedule import SAMPLERS, NoiseSchedule, ddim_step, ddpm_step, full_steps, spaced_steps
from vaelab.diffusion.networks import UNet
from vaelab.errors import VaelabError

S = NoiseSchedule("linear", 1000, 1e-4, 0.02)


def oracle(x0: torch.Tensor, s: NoiseSchedule = S):
    """An eps-model that knows x0: it returns the exact noise that turns x0 into x_t."""
    def eps(x_t, t):
        ab = s.alpha_bar[t].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    return eps


def at(t: int, n: int) -> torch.Tensor:
    """The step t for a batch of n, shaped (n,) as the network and the schedule take it."""
    return torch.full((n,), t, dtype=torch.long)


def test_linear_alpha_bar_at_both_ends():
    assert S.alpha_bar.dtype == torch.float32 and len(S.alpha_bar) == 1000
    assert S.alpha_bar[0].item() == pytest.approx(1 - 1e-4, abs=1e-7)  # alpha_bar_0 = 1 - beta_0
    exact = np.prod(1 - np.linspace(1e-4, 0.02, 1000))  # float64 reference, independent of torch
    assert S.alpha_bar[-1].item() == pytest.approx(exact, rel=1e-6)
    assert exact == pytest.approx(4.04e-5, rel=1e-2)  # x_{T-1} is pure noise to within 0.6 % of x0
    assert S.betas[0].item() == pytest.approx(1e-4) and S.betas[-1].item() == pytest.approx(0.02)


def test_cosine_schedule_is_a_valid_process():
    c = NoiseSchedule("cosine", 1000)
    assert (c.betas > 0).all() and (c.betas <= 0.999).all()
    assert (c.alpha_bar[1:] < c.alpha_bar[:-1]).all()
    assert c.alpha_bar[0].item() > 0.9999 and c.alpha_bar[-1].item() < 1e-6


def test_bad_schedules_are_refused():
    for args in [("sigmoid", 1000), ("linear", 1), ("linear", 10, 0.5, 1.5)]:
        with pytest.raises(VaelabError):
            NoiseSchedule(*args)


def test_q_sample_mean_and_variance():
    t_val, n = 300, 200_000
    ab = S.alpha_bar[t_val].item()
    x0 = torch.full((n, 1, 1, 1), 0.7)
    eps = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    x_t = S.add_noise(x0, torch.full((n,), t_val), eps)
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt((1 - ab) / n))
    assert x_t.var().item() == pytest.approx(1 - ab, rel=0.01)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(0, 999), seed=st.integers(0, 2**16))
def test_predict_x0_inverts_q_sample(t, seed):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1, torch.randn(2, 1, 28, 28, generator=g)
    tt = torch.full((2,), t)
    tol = 1e-5 / math.sqrt(S.alpha_bar[t].item())  # rounding in x_t is amplified by 1 / sqrt(alpha_bar)
    torch.testing.assert_close(S.predict_x0(S.add_noise(x0, tt, eps), tt, eps), x0, atol=tol, rtol=0)


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x0) from q(x_{t-1} | x0) = N(sqrt(ab') x0, 1 - ab') and q(x_t | x_{t-1}) = N(sqrt(a) x, b)."""
    x0, x_t = torch.full((1, 1, 1, 1), 0.3), torch.full((1, 1, 1, 1), -0.4)
    betas = np.linspace(1e-4, 0.02, 1000)  # float64 reference: 1 - alpha_bar_{t-1} cancels badly in float32
    for t in (1, 10, 500, 999):
        a, b, ab_prev = 1 - betas[t], betas[t], np.prod(1 - betas[:t])
        precision = 1 / (1 - ab_prev) + a / b
        mean = (math.sqrt(ab_prev) * 0.3 / (1 - ab_prev) + math.sqrt(a) * -0.4 / b) / precision
        m, v = S.posterior(x0, x_t, torch.tensor([t]))
        assert m.item() == pytest.approx(mean, rel=1e-4) and v.item() == pytest.approx(1 / precision, rel=1e-4)


def test_ddpm_mean_is_the_annex_formula():
    g = torch.Generator().manual_seed(1)
    x_t, eps = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
    t = torch.tensor([5, 400, 999])
    a, ab, b = (v[t].view(-1, 1, 1, 1) for v in (S.alphas, S.alpha_bar, S.betas))
    annex = (x_t - b * eps / (1 - ab).sqrt()) / a.sqrt()
    mean, _ = S.posterior(S.predict_x0(x_t, t, eps), x_t, t)
    torch.testing.assert_close(mean, annex, atol=1e-4, rtol=1e-4)


def test_reverse_step_with_true_noise_recovers_x0_at_t0():
    x0 = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x_1 = S.add_noise(x0, torch.zeros(4, dtype=torch.long), torch.randn(4, 1, 28, 28))
    eps = oracle(x0)(x_1, at(0, 4))
    torch.testing.assert_close(ddpm_step(S, eps, 0, -1, x_1), x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(ddim_step(S, eps, 0, -1, x_1), x0, atol=1e-6, rtol=0)


def test_ddim_with_true_noise_jumps_to_x0_from_any_t():
    x0 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x_t = S.add_noise(x0, torch.full((2,), 600), torch.randn(2, 1, 28, 28))
    torch.testing.assert_close(ddim_step(S, oracle(x0)(x_t, at(600, 2)), 600, -1, x_t), x0, atol=1e-4, rtol=0)
    x_T = torch.randn(2, 1, 28, 28)  # and a whole deterministic chain from noise lands on x0
    torch.testing.assert_close(sample_loop(S, oracle(x0), x_T, "ddim", steps=10), x0, atol=1e-4, rtol=0)


def test_ddim_eta0_is_deterministic_and_ignores_the_generator():
    torch.manual_seed(0)
    net = UNet("4-8", 8).eval()
    x_T = torch.randn(2, 1, 28, 28)
    runs = [sample_loop(S, net, x_T.clone(), "ddim", steps=5, eta=0.0, generator=torch.Generator().manual_seed(k))
            for k in (0, 1)]
    assert torch.equal(runs[0], runs[1])
    noisy = [sample_loop(S, net, x_T.clone(), "ddim", steps=5, eta=1.0, generator=torch.Generator().manual_seed(k))
             for k in (0, 1)]
    assert not torch.equal(noisy[0], noisy[1])


def test_ddim_eta1_on_all_steps_is_ancestral_sampling_with_posterior_variance():
    s, torch_net = NoiseSchedule("linear", 20, 1e-3, 0.2), UNet("4-8", 8).eval()
    x = y = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in range(19, -1, -1):
            x = ddpm_step(s, torch_net(x, at(t, 2)), t, t - 1, x, generator=g1, variance="posterior")
            y = ddim_step(s, torch_net(y, at(t, 2)), t, t - 1, y, eta=1.0, generator=g2)
    torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 999), data=st.data(), seed=st.integers(0, 2**16))
def test_ddim_step_with_the_true_eps_is_add_noise_at_t_prev(t, data, seed):
    """Arithmetic: given the eps of x_t = add_noise(x0, t, eps), DDIM (eta 0) lands on add_noise(x0, t_prev, eps)."""
    t_prev = data.draw(st.integers(-1, t - 1), label="t_prev")
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1, torch.randn(2, 1, 28, 28, generator=g)
    x_t = S.add_noise(x0, at(t, 2), eps)
    want = x0 if t_prev < 0 else S.add_noise(x0, at(t_prev, 2), eps)
    tol = 2e-6 / math.sqrt(S.alpha_bar[t].item())  # rounding in x_t, amplified by 1 / sqrt(alpha_bar) in x0_hat
    torch.testing.assert_close(ddim_step(S, eps, t, t_prev, x_t, eta=0.0), want, atol=tol, rtol=0)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("t", [1, 7, 300, 999])
def test_ddpm_step_is_the_posterior_mean_plus_scaled_noise(t, variance):
    """Arithmetic: with the true eps, ddpm_step = mean of q(x_{t-1} | x_t, x0) + sigma_t z (z: the generator's draw)."""
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1, torch.randn(3, 1, 28, 28, generator=g)
    x_t = S.add_noise(x0, at(t, 3), eps)
    mean, post_var = S.posterior(x0, x_t, at(t, 3))  # the true posterior, from the true x0
    var = {"beta": S.betas[t], "posterior": post_var}[variance]
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(11))
    got = ddpm_step(S, eps, t, t - 1, x_t, generator=torch.Generator().manual_seed(11), variance=variance)
    tol = 2e-6 / math.sqrt(S.alpha_bar[t].item())  # x0_hat carries the rounding of x_t over sqrt(alpha_bar)
    torch.testing.assert_close(got, mean + var.sqrt() * z, atol=tol, rtol=0)
    x0_hat = S.predict_x0(x_t, at(t, 3), eps)  # and exactly the formula of the step on its own estimate
    torch.testing.assert_close(got, S.posterior(x0_hat, x_t, at(t, 3))[0] + var.sqrt() * z, atol=1e-6, rtol=0)
    torch.testing.assert_close(ddpm_step(S, eps, 0, -1, x_t), S.predict_x0(x_t, at(0, 3), eps), atol=1e-6, rtol=0)


@pytest.mark.parametrize("t", [1, 3, 10])
def test_ddpm_default_noise_has_variance_beta_t(t):
    """The annex's sampler (variance="beta", the default): over many draws for one x_t and one eps, x_{t-1} has
    variance beta_t and the posterior mean. At small t, beta_t differs clearly from the posterior beta~_t
    (beta~_1 is 0.45 beta_1, beta~_10 is 0.86 beta_10)."""
    n = 200_000
    x_t, eps = torch.full((n, 1, 1, 1), 0.3), torch.full((n, 1, 1, 1), -0.8)
    out = ddpm_step(S, eps, t, t - 1, x_t, generator=torch.Generator().manual_seed(t)).double()
    betas = np.linspace(1e-4, 0.02, 1000)  # float64 reference, independent of the schedule's tables
    b, ab = betas[t], np.prod(1 - betas[:t + 1])
    mean = (0.3 - b * -0.8 / math.sqrt(1 - ab)) / math.sqrt(1 - b)  # the annex's mean
    assert out.var().item() == pytest.approx(b, rel=0.02)  # the sample variance's spread: sqrt(2 / n) = 0.3 %
    assert out.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(b / n))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)  # "beta" is the default
    assert torch.equal(ddpm_step(S, eps, t, t - 1, x_t, generator=g1),
                       ddpm_step(S, eps, t, t - 1, x_t, generator=g2, variance="beta"))


@pytest.mark.parametrize("t, t_prev, eta", [(600, 400, 1.0), (600, 400, 0.5), (999, 499, 1.0), (300, 0, 0.7)])
def test_ddim_noise_on_spaced_steps(t, t_prev, eta):
    """DDIM with eta > 0 between steps far apart: sigma = eta sqrt((1 - ab') / (1 - ab) (1 - ab / ab')), where
    ab / ab' is the product of the alphas in between (not alpha_t: equal only on adjacent steps); the mean is
    sqrt(ab') x0_hat + sqrt(1 - ab' - sigma^2) eps. Checked over many draws for one x_t and eps."""
    n = 200_000
    x_t, eps = torch.full((n, 1, 1, 1), 0.4), torch.full((n, 1, 1, 1), 1.3)
    out = ddim_step(S, eps, t, t_prev, x_t, eta=eta, generator=torch.Generator().manual_seed(t_prev)).double()
    betas = np.linspace(1e-4, 0.02, 1000)  # float64 reference
    ab, ab_prev = np.prod(1 - betas[:t + 1]), np.prod(1 - betas[:t_prev + 1])
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    x0_hat = (0.4 - math.sqrt(1 - ab) * 1.3) / math.sqrt(ab)
    mean = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev - sigma ** 2) * 1.3
    wrong = eta * math.sqrt((1 - ab_prev) / (1 - ab) * betas[t])  # alpha_t in place of ab / ab'
    assert abs(wrong - sigma) > 0.2 * sigma  # the two formulas are far apart on these steps
    assert out.std().item() == pytest.approx(sigma, rel=0.01)
    assert out.mean().item() == pytest.approx(mean, abs=5 * sigma / math.sqrt(n) + 1e-5)


def test_step_lists():
    assert full_steps(1000, None) == list(range(999, -1, -1)) and full_steps(1000, 1000)[-1] == 0
    ts = spaced_steps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    assert spaced_steps(1000, None) == full_steps(1000, None) and spaced_steps(1000, 1) == [999]
    for bad in (0, 1001):
        with pytest.raises(VaelabError):
            spaced_steps(1000, bad)
    with pytest.raises(VaelabError, match="ddim"):
        full_steps(1000, 50)


def test_sample_loop_visits_every_step_and_clips():
    seen = []
    x = sample_loop(S, lambda x_t, t: torch.zeros_like(x_t), torch.randn(1, 1, 28, 28) * 5, "ddim", 4,
                    keep=lambda t, x: seen.append(t))
    assert seen == spaced_steps(1000, 4)[1:] + [-1] and x.abs().max() <= 1
    assert set(SAMPLERS) == {"ddpm", "ddim"}


def test_min_snr_weights_against_an_independent_computation():
    from vaelab.diffusion.loss import loss_weights
    s = NoiseSchedule("linear", 1000)
    assert loss_weights(s, "simple", 5.0) is None
    w = loss_weights(s, "min_snr", 5.0).double()
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # the annex schedule, in numpy
    snr = ab / (1 - ab)
    want = np.where(snr > 5.0, 5.0 / snr, 1.0)
    assert np.allclose(w.numpy(), want, rtol=1e-5)
    assert w[0] < 1e-3 and w[-1] == 1.0  # nearly clean images weigh little; noisy ones as in L_simple


def test_min_snr_loss_is_the_weighted_mean_squared_error_and_simple_is_unchanged():
    from vaelab.diffusion.loss import loss_weights
    from vaelab.diffusion.train import ddpm_compute
    s = NoiseSchedule("linear", 50)
    net = UNet("4-8", 8)
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    idx = torch.arange(8)
    w = loss_weights(s, "min_snr", 2.0)

    def parts(weights):  # the loss, and the same draws of t and eps redone by hand
        torch.manual_seed(3)
        loss, record = ddpm_compute(net, s, x, amp=False, weights=weights)(idx)
        torch.manual_seed(3)
        x0 = x[idx].float() / 255 * 2 - 1
        t = torch.randint(0, s.T, (8,))
        eps = torch.randn_like(x0)
        err = (net(s.add_noise(x0, t, eps), t) - eps).square().mean(dim=(1, 2, 3))  # (B,)
        return loss, record, err, t

    loss, record, err, t = parts(None)
    assert torch.allclose(loss, err.mean(), rtol=1e-5) and record.shape == (1,)
    loss_w, _, err_w, t_w = parts(w)
    assert torch.allclose(loss_w, (w[t_w] * err_w).mean(), rtol=1e-5)
    assert not torch.allclose(loss_w, loss)


def test_the_torch_free_names_match_the_registries():
    from vaelab.diffusion.config import SAMPLER_NAMES, SCHEDULE_KINDS
    from vaelab.diffusion.schedule import SAMPLERS, SCHEDULES
    assert SAMPLER_NAMES == tuple(SAMPLERS) and SCHEDULE_KINDS == tuple(SCHEDULES)
