"""Latent structure: prior holes, KL of a Gaussian fit to N(0, I), MMD (known answers and independent checks)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaelab.data.registry import MNIST
from vaelab.data.images import load, to_unit
from vaelab.metrics import reference, structure
from vaelab.studies import tables as studies

REAL_MNIST = os.environ.get("VAELAB_DATA") or "/work/shared/data/mnist"


def correlated(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n draws (n, d) of a correlated, scaled Gaussian, shifted by `shift` on every axis."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5 + torch.eye(d, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a.T + shift


def test_kl_of_the_gaussian_fit_matches_torch_distributions():
    z = correlated(3000, 4, 0, shift=0.3)
    m, cov = z.mean(0), torch.cov(z.T)
    expected = kl_divergence(MultivariateNormal(m, cov), MultivariateNormal(torch.zeros(4, dtype=torch.float64),
                                                                           torch.eye(4, dtype=torch.float64)))
    assert structure.gaussian_kl_to_standard(z) == pytest.approx(float(expected), rel=1e-9)
    assert structure.gaussian_kl_to_standard(torch.randn(20000, 3, generator=torch.Generator().manual_seed(1))) < 1e-3


def test_mmd_is_about_zero_for_one_distribution_and_large_for_a_shifted_one():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(500, 5, generator=g), torch.randn(500, 5, generator=g)
    same, bandwidths = structure.mmd2(x, y)
    shifted, _ = structure.mmd2(x, y + 1.0)
    assert len(bandwidths) == 3 and bandwidths[1] == pytest.approx(2 * bandwidths[0])
    assert abs(same) < 0.01 and shifted > 0.3 and shifted > 30 * abs(same), (same, shifted)


def test_mmd_matches_a_direct_double_sum():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    hs = [0.7, 1.9]
    k = lambda a, b: sum(torch.exp(-((a - b) ** 2).sum() / (2 * h * h)) for h in hs)  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35
    assert structure.mmd2(x, y, hs)[0] == pytest.approx(float(xx + yy - 2 * xy), rel=1e-9)


def test_hole_share_counts_confidences_below_the_threshold():
    assert structure.hole_share(torch.tensor([0.4, 0.6, 0.9, 0.1])) == 0.5
    assert structure.hole_share(torch.tensor([0.5, 0.99])) == 0.0  # 0.5 itself is not a hole


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason="needs the real MNIST files")
def test_a_decoder_that_always_draws_one_clear_test_digit_has_no_prior_holes():
    data = load("mnist", REAL_MNIST)
    clf = reference.pinned(MNIST)
    x = to_unit(data.test_x[:50])  # (50, 1, 28, 28)
    conf = structure.confidences(x, clf)
    digit = x[int(conf.argmax())]  # the test digit the classifier is surest of
    decode = lambda z: digit.expand(len(z), 1, 28, 28)  # noqa: E731  (ignores z)
    mu, logvar = torch.randn(50, 2), torch.zeros(50, 2)
    out = structure.latent_structure(decode, 2, mu, logvar, x, clf, n_prior=300, seed=0)
    assert out["prior_holes"]["share"] == 0.0 and out["prior_holes"]["n_prior"] == 300
    assert out["prior_holes"]["test_share"] <= 0.1
    blank = structure.latent_structure(lambda z: torch.full((len(z), 1, 28, 28), 0.5), 2, mu, logvar, x, clf,
                                       n_prior=300, seed=0)  # a grey square: no digit, every z a hole
    assert blank["prior_holes"]["share"] == 1.0  # measured: confidence 0.21


def test_structure_draws_from_its_own_generator_only():
    state = torch.get_rng_state()
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    clf_free = structure.against_prior(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)),
                                       torch.Generator().manual_seed(1))
    assert torch.rand(1) == before and clf_free["mmd_points"] == 100
    torch.set_rng_state(state)


def fake_beta_run(folder, beta: float, holes: float, kl_z: float, mmd_z: float, path: float | None = None) -> None:
    """A beta-study run folder with made-up -ELBO and latent-structure numbers."""
    run = folder / f"conv-32-64-128_z10_beta{beta:g}_seed0"
    run.mkdir(parents=True)
    run.joinpath("config.json").write_text(json.dumps(
        {"kind": "vae", "model": {"family": "conv", "arch": "32-64-128", "latent_dim": 10},
         "train": {"epochs": 3, "beta": beta, "seed": 0}}))
    run.joinpath("metrics.jsonl").write_text(json.dumps(
        {"epoch": 3, "seconds": 9.0, "test_neg_elbo": 100 + abs(beta - 1), "test_recon": 80.0, "test_kl": 20.0}) + "\n")
    side = {"kl_gaussian_fit": kl_z, "mmd2": mmd_z}
    structure = {"prior_holes": {"share": holes, "test_share": 0.003}, "on_mu": side, "on_z": side}
    if path is not None:
        structure["interpolation"] = {"path_length": path, "largest_jump": 0.3}
    run.joinpath("metrics.json").write_text(json.dumps(
        {"format": "vaelab-metrics-1", "likelihood": {"neg_elbo": 100 + abs(beta - 1), "recon": 80.0, "kl": 20.0}, "latent_structure": structure}))


def test_beta_verdict_states_whether_the_reports_latent_claims_hold(tmp_path):
    for beta, holes, kl, mmd in ((0.2, 0.20, 0.9, 0.05), (1.0, 0.08, 0.5, 0.02), (5.0, 0.03, 0.1, 0.004)):
        fake_beta_run(tmp_path / "agree", beta, holes, kl, mmd)
    rows = studies.collect(tmp_path / "agree")
    assert rows[0].mean("prior_holes") == 0.2 and rows[2].mean("mmd_z") == 0.004
    v = studies.verdict("beta", rows)
    assert "more holes holds for every such beta" in v and "prior) holds for every such beta" in v, v
    assert "0.200 against 0.080 (one seed: no spread measured)" in v  # not "spread up to 0"
    header, body = studies.table(rows)
    assert "prior holes" in header and body[0][header.index("prior holes")] == "0.200"
    for beta, holes, kl, mmd in ((0.2, 0.01, 0.9, 0.05), (1.0, 0.08, 0.5, 0.02), (5.0, 0.03, 0.9, 0.05)):
        fake_beta_run(tmp_path / "disagree", beta, holes, kl, mmd)
    v = studies.verdict("beta", studies.collect(tmp_path / "disagree"))
    assert "more holes does not hold" in v and "prior) does not hold" in v, v
    assert "Interpolation between" not in v  # no path lengths measured: no sentence about them
    for beta, path in ((0.2, 1.9), (1.0, 1.5), (5.0, 1.3)):
        fake_beta_run(tmp_path / "paths", beta, 0.1, 0.5, 0.02, path)
    v = studies.verdict("beta", studies.collect(tmp_path / "paths"))
    assert "beta < 1 against beta 1, longer: 1.900 against 1.500" in v and "beta > 1, shorter: 1.300" in v, v
    fake_beta_run(tmp_path / "none", 1.0, 0.1, 0.1, 0.1)
    assert "Latent structure: not measured" in studies.verdict("beta", studies.collect(tmp_path / "none"))


def test_different_class_pairs_never_pair_one_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2] * 20)
    pairs = structure.different_class_pairs(labels, 30, torch.Generator().manual_seed(0))
    assert 0 < len(pairs) <= 30 and all(labels[a] != labels[b] for a, b in pairs)
    assert structure.different_class_pairs(torch.zeros(40, dtype=torch.long), 5, torch.Generator()) == []


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason="needs the real MNIST files")
def test_interpolation_smoothness_of_known_paths():
    data = load("mnist", REAL_MNIST)
    clf = reference.pinned(MNIST)
    x = to_unit(data.test_x[:2])  # a 7 and a 2
    labels = data.test_y[:2].repeat(20)  # (40,): the two classes alternate, so every pair spans both
    mu = torch.tensor([0.0, 1.0]).repeat(20)[:, None]  # (40, 1): mu 0 for the first digit, 1 for the second
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    step = lambda z: x[(z[:, 0] > 0.5).long()]  # noqa: E731  (frames 0-4 draw one digit, 5-9 the other)
    one_jump = structure.smoothness(step, mu, labels, clf, g(), pairs=8)
    assert one_jump["pairs"] == 8 and one_jump["frames"] == 10
    assert one_jump["path_length"] == pytest.approx(1.0) and one_jump["largest_jump"] == pytest.approx(1.0)
    assert one_jump["off_class_share"] == 0.0
    zigzag = lambda z: x[(z[:, 0] * 9).round().long() % 2]  # noqa: E731  (the digits alternate frame by frame)
    back_and_forth = structure.smoothness(zigzag, mu, labels, clf, g(), pairs=8)
    assert back_and_forth["path_length"] == pytest.approx(9.0) and back_and_forth["largest_jump"] == pytest.approx(1.0)
    out = structure.latent_structure(step, 1, mu, torch.zeros(40, 1), x.repeat(20, 1, 1, 1), clf, n_prior=100, seed=0,
                                     labels=labels)
    assert out["interpolation"]["path_length"] == pytest.approx(1.0)
    without = structure.latent_structure(step, 1, mu, torch.zeros(40, 1), x.repeat(20, 1, 1, 1), clf, n_prior=100, seed=0)
    assert "interpolation" not in without and without["prior_holes"] == out["prior_holes"]  # drawn last: nothing moves
