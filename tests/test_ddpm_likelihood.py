"""The DDPM's variational bound on 8-bit images against known answers (diffusion/likelihood.py)."""

import math

import torch

from vaelab.diffusion import likelihood as L
from vaelab.diffusion.networks import UNet
from vaelab.diffusion.sample import eps_model
from vaelab.diffusion.schedule import NoiseSchedule, gather

torch.set_num_threads(1)
GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 256 grey levels on [-1, 1]


def grid_images(n, shape=(1, 4, 4), seed=0):
    """n random 8-bit images scaled to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 127.5 - 1


class TinyEps(torch.nn.Module):
    """A fixed random eps-predictor that depends on x_t and t (not trained: the bound holds for any model)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (1 + t.view(-1, 1, 1, 1) / 10)


def test_discretized_gaussian_sums_to_one_over_the_256_bins():
    g = torch.Generator().manual_seed(0)
    means = torch.rand(40, generator=g, dtype=torch.float64) * 6 - 3  # inside, at and far beyond [-1, 1]
    log_scales = torch.rand(40, generator=g, dtype=torch.float64) * 10 - 9  # sd from 1e-4 to e
    for m, ls in zip(means, log_scales):
        p = L.log_normal_bins(GRID, m.expand(256), ls.expand(256)).exp()
        assert abs(float(p.sum()) - 1) < 1e-9, (m, ls, float(p.sum()))
        assert (p >= 0).all()


def test_discretized_gaussian_is_the_normal_mass_of_an_inner_bin():
    x, m, s = torch.tensor([GRID[100]]), torch.tensor([-0.2]), 0.05
    expected = torch.distributions.Normal(-0.2, s).cdf(x + 1 / 255) - torch.distributions.Normal(-0.2, s).cdf(x - 1 / 255)
    got = L.log_normal_bins(x, m, torch.tensor([math.log(s)])).exp()
    assert torch.allclose(got, expected.double(), rtol=1e-6)


def test_bits_per_dim_are_nats_over_d_ln2():
    assert L.bits_per_dim(784 * math.log(2), 784) == 1.0
    assert abs(L.bits_per_dim(1000.0, 784) - 1000 / (784 * math.log(2))) < 1e-12


def monte_carlo_kl(s, eps_fn, x0, t, noise, variance, n=20000):
    """E_q[log q(x_{t-1}|x_t,x0) - log p(x_{t-1}|x_t)], sampled, from the schedule's own posterior and predict_x0."""
    tt = torch.full((1,), t, dtype=torch.long)
    x_t = s.add_noise(x0, tt, noise)
    mean_q, var_q = s.posterior(x0, x_t, tt)
    mean_p, _ = s.posterior(s.predict_x0(x_t, tt, eps_fn(x_t, tt)), x_t, tt)
    var_p = var_q if variance == "posterior" else gather(s.betas, tt)
    q = torch.distributions.Normal(mean_q.double(), var_q.double().sqrt())
    p = torch.distributions.Normal(mean_p.double(), var_p.double().sqrt())
    y = q.sample((n,))  # (n, 1, 1, 4, 4)
    ratio = (q.log_prob(y) - p.log_prob(y)).flatten(1).sum(1)
    return float(ratio.mean()), float(ratio.std() / math.sqrt(n))


def test_kl_terms_equal_a_monte_carlo_estimate():
    torch.manual_seed(1)
    s, net = NoiseSchedule("linear", 20, 1e-3, 0.2), TinyEps().eval()
    x0 = grid_images(1)
    with torch.no_grad():
        for variance in ("posterior", "beta"):
            for t in (1, 5, 19):
                noise = torch.randn(1, 1, 4, 4)
                exact = float(L.step_terms(net, s, x0, torch.tensor([t]), noise, variance)[0])
                mc, se = monte_carlo_kl(s, net, x0, t, noise, variance)
                assert abs(exact - mc) < 4 * se + 1e-3 * abs(exact), (variance, t, exact, mc, se)


def test_prior_term_equals_a_monte_carlo_estimate():
    s, x0 = NoiseSchedule("linear", 20, 1e-3, 0.2), grid_images(1)
    ab = float(s.alpha_bar[-1])
    q = torch.distributions.Normal(math.sqrt(ab) * x0.double(), math.sqrt(1 - ab))
    y = q.sample((200000,))
    mc = (q.log_prob(y) - torch.distributions.Normal(0.0, 1.0).log_prob(y)).flatten(1).sum(1).mean()
    assert abs(float(L.prior_kl(s, x0)[0]) - float(mc)) < 0.01


def test_the_estimate_is_unbiased_for_the_exact_sum():
    s, net = NoiseSchedule("linear", 13, 1e-3, 0.2), TinyEps().eval()
    x0 = grid_images(3)
    exact = L.image_bounds(net, s, x0, None, seed=4)
    draws = torch.stack([L.estimated_bound(net, s, x0, 3, seed=4, draw=d) for d in range(300)])  # (300, 3)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert (draws.std(0) > 0).all()  # the steps do vary between draws
    assert ((mean - exact).abs() < 4 * se + 1e-9).all(), (mean, exact, se)
    # K = T - 1: every step exactly once, the estimate is the exact sum
    assert torch.allclose(L.estimated_bound(net, s, x0, 12, seed=4), exact)


def test_strata_cover_every_step_once():
    edges = L.strata(1000, 7)
    assert edges[0] == 1 and edges[-1] == 1000 and (edges[1:] > edges[:-1]).all()
    steps, weights = L.sampled_steps(1000, 7, 500, torch.Generator().manual_seed(0))
    assert weights.sum() == 999
    assert ((steps >= edges[:-1]) & (steps < edges[1:])).all()


def gaussian_true_nll(x0, m, sd):
    """-log P(x0's 8-bit bins) per image when every pixel is N(m, sd^2) quantised (edge bins open)."""
    return -L.log_normal_bins(x0, torch.full_like(x0, m), torch.full_like(x0, math.log(sd))).flatten(1).sum(1)


def optimal_eps(s, m, sd):
    """E[eps | x_t] for pixels x0 ~ N(m, sd^2): the best eps-predictor for the continuous Gaussian."""
    def eps(x_t, t):
        ab = gather(s.alpha_bar, t).double()
        return ((1 - ab).sqrt() * (x_t.double() - ab.sqrt() * m) / (ab * sd ** 2 + 1 - ab)).float()
    return eps


def gaussian_gap(variance, n):
    """(mean of bound - true -log P, its standard error) per dimension on n quantised 2x2 Gaussian images."""
    m, sd, s = 0.1, 0.3, NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x = (m + sd * torch.randn(n, 1, 2, 2, generator=g)).clamp(-1, 1)
    x0 = torch.round((x + 1) * 127.5) / 127.5 - 1  # 8-bit data: the Gaussian quantised
    true = gaussian_true_nll(x0, m, sd)  # about 5.07 nats per dimension
    bound = L.image_bounds(optimal_eps(s, m, sd), s, x0, None, variance=variance, images_per_call=n, batch=n * 1000)
    gap = (bound - true) / 4
    return float(gap.mean()), float(gap.std() / math.sqrt(n)), float(true.mean()) / 4


def test_on_gaussian_data_the_bound_is_above_and_close_to_the_true_nll():
    # an upper bound: E[bound] >= E[-log p_model] >= E[-log p_true]; tight for the best predictor with sigma^2 =
    # beta (measured 0.03 +- 0.03 nats/dim over 5.07); beta~ is the optimal variance for a point mass, not for
    # this broad Gaussian: measured 0.47 nats/dim above
    gap, se, per_dim = gaussian_gap("beta", 400)
    assert -3 * se < gap < 0.02 * per_dim, (gap, se)
    gap, se, per_dim = gaussian_gap("posterior", 200)
    assert -3 * se < gap < 0.15 * per_dim, (gap, se)


def test_exact_bound_of_a_unet_runs_batched_over_steps():
    s, net = NoiseSchedule("linear", 10), UNet("4-8", 8).eval()
    x0 = grid_images(2, (1, 28, 28))
    f = eps_model(net, torch.device("cpu"), amp=False)
    terms = L.exact_terms(f, s, x0, batch=7)
    assert terms.shape == (2, 11) and torch.isfinite(terms).all() and (terms[:, 1:] >= -1e-9).all()
    again = L.exact_terms(f, s, x0, batch=20)
    assert torch.allclose(terms, again, rtol=1e-5)  # the batching does not change the terms
    assert torch.allclose(L.image_bounds(f, s, x0, images_per_call=1), terms.sum(1), rtol=1e-5)
