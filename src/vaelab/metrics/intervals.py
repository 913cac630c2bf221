"""Bootstrap intervals over a generated set: resample its N images with replacement, recompute, take percentiles.

Pure tensor arithmetic on per-sample quantities (quality.py computes them once): a resample is a row of
indices into the generated set, and each replicate is recomputed from the quantities of the images it
drew, never from images or a model. The reference set is held fixed: an interval says how much a
metric moves with another draw of N generated images, not with another reference set.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

RESAMPLES = 200  # bootstrap resamples: each end of a 95% interval is then known to about 5% of its width
LEVEL = 0.95
CHUNK = 25  # resamples handled at once by any_replicates: 25 x 10,000 x 32 bools = 8 MB


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the count: the bootstrap's operations are small."""
    # 200 resamples of 128 x 128 covariances and eigenvalues, gathers of 10,000 rows: with 2 threads on a
    # busy 2-core machine the bootstrap took 32 s, with one 7 s (threads wait for each other at every step)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> torch.Tensor:
    """(resamples, n) indices drawn with replacement from range(n), seeded (the same on every machine)."""
    return torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))


def counts(idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) float64: how many times each of the n items is drawn in each resample of `idx` (B, n)."""
    ones = torch.ones(idx.shape, dtype=torch.float64)
    return torch.zeros(len(idx), n, dtype=torch.float64).scatter_add_(1, idx, ones)


def mean_replicates(per_sample: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B,) mean of a per-sample quantity (n,) over each resample's draws."""
    return per_sample.double()[idx].mean(1)


def any_replicates(members: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) share of rows of `members` (M, C; item indices, n pads) with at least one member drawn."""
    out = []
    for i in range(0, len(idx), CHUNK):
        drawn = torch.zeros(len(idx[i:i + CHUNK]), n + 1, dtype=torch.bool)  # column n: the padding, never drawn
        drawn.scatter_(1, idx[i:i + CHUNK], True)
        out.append(drawn[:, members].any(2).double().mean(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def moment_replicates(feats: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means (B, F) and unbiased covariances (B, F, F) of the resamples' features, in float64."""
    f = feats.double()
    n, mu = len(f), f.mean(0)
    c = f - mu  # centred once; a resample's second moment is a weighted sum of these outer products
    means, covs = [], []
    for w in counts(idx, n):
        drawn = w.nonzero().squeeze(1)  # about 63% of the images: the others weigh 0
        cw = c[drawn]
        delta = (w[drawn] @ cw) / n  # the resample's mean minus the full set's
        means.append(mu + delta)
        covs.append(((cw * w[drawn, None]).T @ cw - n * torch.outer(delta, delta)) / (n - 1))
    return torch.stack(means), torch.stack(covs)


def score_replicates(probs: torch.Tensor, idx: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B,) exp(E KL(p(y|x) || p(y))) of each resample of class probabilities (N, C): the classifier score."""
    p = probs.double()
    w = counts(idx, len(p)) / len(p)  # (B, N): each resample's weights, summing to 1
    p_y = w @ p  # (B, C): each resample's marginal
    own = (p * (p + eps).log()).sum(1)  # (N,): sum_c p log p, the part of the KL that is the image's own
    return (w @ own - (p_y * (p_y + eps).log()).sum(1)).exp()


def percentile_interval(values: torch.Tensor, level: float = LEVEL) -> list[float]:
    """[low, high]: the (1 - level)/2 and (1 + level)/2 quantiles of the replicates (linear interpolation)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return [float(v) for v in torch.quantile(values.double(), q)]


def shift(values: torch.Tensor, estimate: float) -> float:
    """The bootstrap's bias estimate: the replicates' mean minus the full set's value."""
    return float(values.double().mean()) - estimate


def shifted_interval(values: torch.Tensor, estimate: float, level: float = LEVEL) -> list[float]:
    """The percentile interval of the replicates moved by -shift, so that it is centred where the estimate is."""
    # a resample holds about 63% distinct images: FD-LeNet (biased up at finite N) rises, and coverage and
    # recall (which count distinct images) fall; on 10,000 training images against the test set the raw
    # percentile intervals missed the estimate by 2 (FD) to 30 (recall) standard deviations
    b = shift(values, estimate)
    return [v - b for v in percentile_interval(values, level)]


def describe(n: int, resamples: int, seed: int, level: float = LEVEL) -> dict:
    """What the intervals are, as metrics.json records it next to them."""
    return {"method": f"bootstrap over the {n} generated images, {resamples} resamples, percentile, shifted by "
                      "the bootstrap bias (mean of the resamples minus the estimate)",
            "level": level, "seed": seed,
            "held_fixed": "the reference images and their k-NN radii; recall is conditional on the full "
                          "generated set's radii (a resample keeps or drops whole fake balls)"}
