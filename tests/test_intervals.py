"""Bootstrap intervals of the sample metrics: against direct recomputes, centred, shrinking with N, seeded."""

import re

import pytest
import torch

from vaelab.cli.args.evaluate import EVALUATE_HELP
from vaelab.cli.evaluate import table
from vaelab.metrics import intervals, quality

torch.set_num_threads(1)
METRICS = ("fd_lenet", "precision", "recall", "density", "coverage", "classifier_score")


def generated(n, seed, shift=0.3, dim=8):
    """Stand-in features and class probabilities of n generated images (a shifted, wider Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, dim, generator=g) * 1.2 + shift
    probs = torch.softmax(3 * feats[:, :10 if dim >= 10 else dim] + torch.randn(n, min(dim, 10), generator=g), 1)
    return feats, probs


def real_features(m=1000, dim=8):
    return torch.randn(m, dim, generator=torch.Generator().manual_seed(99))


def bootstrap(real, fake, probs, resamples=200, seed=0):
    nb = quality.neighbourhoods(real, fake)
    point = quality.compare_features(real, fake, probs, nb)
    return point, quality.sample_intervals(real, fake, probs, nb, point, resamples, seed)


def test_each_replicate_equals_a_direct_recompute_on_its_resample():
    real, (fake, probs) = real_features(400), generated(300, 1)
    nb = quality.neighbourhoods(real, fake)
    idx = intervals.resample_indices(len(fake), 3, seed=5)
    reps = quality.replicates(real, fake, probs, nb, idx)
    radii = quality.knn_radii(fake)  # recall: conditional on the full set's fake radii
    for b, i in enumerate(idx):
        assert reps["classifier_score"][b] == pytest.approx(quality.classifier_score(probs[i]), rel=1e-12)
        assert reps["fd_lenet"][b] == pytest.approx(quality.fd_features(real, fake[i]), rel=1e-9)
        direct = quality.neighbourhoods(real, fake[i])
        assert reps["precision"][b] == pytest.approx(direct.precision(), abs=1e-12)
        assert reps["density"][b] == pytest.approx(direct.density(), abs=1e-12)
        assert reps["coverage"][b] == pytest.approx(direct.coverage(), abs=1e-12)
        assert reps["recall"][b] == pytest.approx(float(quality.covered(real, fake[i], radii[i]).double().mean()),
                                                  abs=1e-12)
    assert len(set(reps["fd_lenet"].tolist())) == 3  # three different resamples


def test_intervals_contain_the_estimate_though_resamples_repeat_images():
    real, (fake, probs) = real_features(), generated(1000, 2, shift=0.0, dim=8)
    point, out = bootstrap(real, fake, probs)
    for name in METRICS:
        low, high = out[f"{name}_ci"]
        assert low < point[name] < high, name
    # why the percentile interval is shifted: a resample holds ~63% distinct images, so coverage and recall
    # (which count distinct images) fall; the raw percentile interval lies wholly below the estimate
    idx = intervals.resample_indices(len(fake), 200, 0)
    reps = quality.replicates(real, fake, probs, quality.neighbourhoods(real, fake), idx)
    for name in ("coverage", "recall"):
        assert intervals.percentile_interval(reps[name])[1] < point[name], name
        assert out["interval"]["shift"][name] < 0


def test_intervals_shrink_with_n():
    real = real_features(1000)
    widths = {}
    for n in (200, 2000):
        fake, probs = generated(n, 3)  # two draws of one distribution
        _, out = bootstrap(real, fake, probs)
        widths[n] = {name: out[f"{name}_ci"][1] - out[f"{name}_ci"][0] for name in METRICS}
    for name in ("fd_lenet", "precision", "density", "classifier_score"):  # means over the generated images:
        assert 0 < widths[2000][name] < widths[200][name] / 2.5, (name, widths)  # sqrt(10) = 3.2 narrower
    # coverage and recall are means over the REAL images: their width is not 1/sqrt(N) (with 2,000 reals,
    # coverage's is 0.038 at N = 200 and 0.041 at N = 2,000); with 1,000 reals it halves
    for name in ("coverage", "recall"):
        assert 0 < widths[2000][name] < widths[200][name] / 1.5, (name, widths)


def test_intervals_are_reproducible_with_the_seed():
    real, (fake, probs) = real_features(500), generated(400, 4)
    _, a = bootstrap(real, fake, probs, seed=7)
    _, b = bootstrap(real, fake, probs, seed=7)
    _, c = bootstrap(real, fake, probs, seed=8)
    for name in METRICS:
        assert a[f"{name}_ci"] == b[f"{name}_ci"], name
    assert any(a[f"{name}_ci"] != c[f"{name}_ci"] for name in METRICS)
    assert a["interval"]["method"] == ("bootstrap over the 400 generated images, 200 resamples, percentile, shifted "
                                       "by the bootstrap bias (mean of the resamples minus the estimate)")
    assert a["interval"]["level"] == 0.95 and a["interval"]["seed"] == 7


def test_a_resample_never_draws_the_padding():
    members = torch.tensor([[0, 3, 3], [3, 3, 3], [2, 3, 3]])  # n = 3 pads: real 1 holds no fake
    idx = torch.tensor([[0, 0, 0], [1, 2, 2], [1, 1, 1]])
    assert intervals.any_replicates(members, idx, 3).tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])


def test_the_evaluate_table_shows_intervals_n_and_density_coverage_with_anchors():
    anchor = {"fd_lenet": 1.5, "precision": 0.87, "recall": 0.88, "density": 0.93, "coverage": 0.94}
    sq = {"n": 10000, "fd_lenet": 75.8, "fd_lenet_ci": [74.9, 76.8], "precision": 0.5, "precision_ci": [0.49, 0.51],
          "density": 0.42, "density_ci": [0.41, 0.43], "coverage": 0.61, "coverage_ci": [0.6, 0.62],
          "anchors": {"floor": anchor, "ceiling": {**anchor, "precision": 0.23, "density": 0.47, "coverage": 0.001}}}
    lines = table(["run"], [{"model": "m", "sample_quality": sq}]).splitlines()
    row = {re.split(r"\s{2,}", line)[0]: line for line in lines if not line.startswith("  ")}
    assert "75.80 [74.90, 76.80] (N=10000)" in row["FD-LeNet (lower is better)"]
    assert "0.420 [0.410, 0.430] (N=10000)" in row["density (k=5; ~1 = like the test set)"]
    assert "0.610 [0.600, 0.620] (N=10000)" in row["coverage (k=5)"]
    cov = lines.index(row["coverage (k=5)"])
    assert lines[cov + 1].startswith("  floor: train vs test") and lines[cov + 1].rstrip().endswith("0.940")
    assert lines[cov + 2].startswith("  ceiling: noise vs test") and lines[cov + 2].rstrip().endswith("0.001")
    dens = lines.index(row["density (k=5; ~1 = like the test set)"])
    assert lines[dens + 2].startswith("  ceiling: noise vs test") and lines[dens + 2].rstrip().endswith("0.470")
    old = {"model": "m", "sample_quality": {"n": 500, "precision": 0.5}}  # metrics.json from before intervals
    assert "0.500 (N=500)" in table(["run"], [old]) and "density" in table(["run"], [old])
    assert "Naeem" in EVALUATE_HELP and "95%" in EVALUATE_HELP and "bootstrap" in EVALUATE_HELP
