"""How regular a VAE's latent space is: holes under the prior and the aggregate posterior against N(0, I).

The report claims beta < 1 gives a less structured latent and beta > 1 a more structured one. Three
numbers test it:
  prior holes  the share of z ~ N(0, I) whose decoded image the reference classifier labels with
               confidence (max softmax) < 0.5, beside the same share for real test images (the floor);
  KL           KL(N(m, S) || N(0, I)) in closed form, N(m, S) the Gaussian fitted to a set of latents;
  MMD          the squared maximum mean discrepancy (unbiased, Gretton et al. 2012) between a set of
               latents and as many draws of N(0, I), with a sum of RBF kernels (KERNEL).
  smoothness   the interpolation paths between the mu of test images of different classes (lerp, PATH_FRAMES
               frames), measured in the classifier's features by path_metrics: path length (1: straight),
               largest jump, and the share of frames of neither endpoint's class.
KL and MMD are computed on the posterior means mu (as the issue asks) and on z ~ q(z|x), one draw per
test image: the aggregate posterior, which is what the prior should match. On mu alone, an inactive
dimension (Var mu_d ~ 0) makes the fitted Gaussian degenerate and its KL large.
"""

from __future__ import annotations

import torch

from vaelab.metrics.classifier import ReferenceClassifier, features

HOLE_CONFIDENCE = 0.5  # a decoded z is a hole when the classifier's top class has less than this probability
BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)  # RBF bandwidths: these multiples of the median pairwise distance
KERNEL = ("sum of RBF kernels exp(-||a - b||^2 / (2 h^2)), h = 0.5, 1 and 2 x the median pairwise distance of "
          "the pooled sample")
MMD_MAX = 2000  # points per side of the MMD (its cost is quadratic)
PATH_PAIRS, PATH_FRAMES = 50, 10  # interpolation smoothness: pairs of test images, frames per path (the report's 10)


def confidences(images: torch.Tensor, clf: ReferenceClassifier) -> torch.Tensor:
    """The classifier's top-class probability (N,) for images (N, 1, 28, 28) in [0, 1]."""
    return features(images, clf)[1].max(1).values


def hole_share(conf: torch.Tensor, threshold: float = HOLE_CONFIDENCE) -> float:
    """Share of images whose top-class probability is below `threshold`."""
    return float((conf < threshold).double().mean())


def gaussian_kl_to_standard(z: torch.Tensor) -> float:
    """KL(N(m, S) || N(0, I)) for the Gaussian fitted to z (N, D): (tr S + m.m - D - log det S) / 2, in nats."""
    f = z.double()
    m, cov = f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])  # (D,), (D, D)
    logdet = torch.linalg.slogdet(cov)[1]
    return float(0.5 * (cov.trace() + m.dot(m) - f.shape[1] - logdet))


def median_distance(a: torch.Tensor) -> float:
    """Median of the pairwise Euclidean distances between distinct rows of a (N, D)."""
    d = torch.cdist(a, a)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].median())


def rbf_sum(a: torch.Tensor, b: torch.Tensor, bandwidths: list[float]) -> torch.Tensor:
    """Kernel matrix (N, M) of KERNEL: sum over h of exp(-||a_i - b_j||^2 / (2 h^2))."""
    d2 = torch.cdist(a, b).pow(2)
    return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float] | None = None) -> tuple[float, list[float]]:
    """Unbiased squared MMD between samples x (N, D) and y (M, D) under KERNEL, and the bandwidths used."""
    x, y = x.double(), y.double()
    if bandwidths is None:
        h = median_distance(torch.cat([x, y]))
        bandwidths = [f * h for f in BANDWIDTH_FACTORS]
    kxx, kyy, kxy = rbf_sum(x, x, bandwidths), rbf_sum(y, y, bandwidths), rbf_sum(x, y, bandwidths)
    n, m = len(x), len(y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))  # without i = j: unbiased
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean()), bandwidths


def against_prior(z: torch.Tensor, generator: torch.Generator, n_mmd: int = MMD_MAX) -> dict:
    """KL of the Gaussian fit and MMD^2 of the latents z (N, D) against N(0, I) (its draws from `generator`)."""
    z = z.double().cpu()
    n = min(n_mmd, len(z))
    prior = torch.randn(n, z.shape[1], generator=generator, dtype=torch.float64)
    value, bandwidths = mmd2(z[:n], prior)
    return {"kl_gaussian_fit": gaussian_kl_to_standard(z), "mmd2": value, "mmd_points": n,
            "mmd_bandwidths": [round(h, 4) for h in bandwidths]}


def path_metrics(feats: torch.Tensor, probs: torch.Tensor, ends: tuple[int, int]) -> dict:
    """Smoothness of a path of S frames from their classifier features (S, F) and class probabilities (S, C).

    path_length: sum of the distances between consecutive frames over the endpoints' distance (1: a straight
    path); largest_jump: the longest single step over the same distance; off_class_share: the share of frames
    whose predicted class is neither of `ends` (the endpoints' classes).
    """
    steps = (feats[1:] - feats[:-1]).double().norm(dim=1)  # (S - 1,)
    span = float((feats[-1] - feats[0]).double().norm())
    conf, cls = probs.max(1)
    span = max(span, 1e-12)
    return {"path_length": float(steps.sum()) / span, "largest_jump": float(steps.max()) / span,
            "confidence": [round(float(c), 4) for c in conf], "min_confidence": float(conf.min()),
            "mean_confidence": float(conf.mean()),
            "off_class_share": float(((cls != ends[0]) & (cls != ends[1])).double().mean()),
            "classes": [int(c) for c in cls]}


def different_class_pairs(labels: torch.Tensor, n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """Up to n pairs of indices into labels (N,) whose labels differ: consecutive entries of a seeded permutation."""
    order = torch.randperm(len(labels), generator=generator)
    pairs = [(int(a), int(b)) for a, b in zip(order[0::2], order[1::2]) if labels[a] != labels[b]]
    return pairs[:n]


@torch.no_grad()
def smoothness(decode, mu: torch.Tensor, labels: torch.Tensor, clf: ReferenceClassifier, generator: torch.Generator,
               pairs: int = PATH_PAIRS, frames: int = PATH_FRAMES) -> dict:
    """Mean path metrics of lerp paths mu_a -> mu_b (frames decoded by `decode`) between test images of different
    classes; mu (N, D) and labels (N,) of the test images."""
    chosen = different_class_pairs(labels, pairs, generator)
    r = torch.linspace(0, 1, frames, dtype=mu.dtype)[:, None]  # (frames, 1)
    z = torch.cat([(1 - r) * mu[a] + r * mu[b] for a, b in chosen])  # (pairs * frames, D)
    feats, probs = features(decode(z).float().cpu(), clf)
    per = [path_metrics(feats[k * frames:(k + 1) * frames], probs[k * frames:(k + 1) * frames],
                        (int(labels[a]), int(labels[b]))) for k, (a, b) in enumerate(chosen)]
    keys = ("path_length", "largest_jump", "mean_confidence", "min_confidence", "off_class_share")
    return {"pairs": len(per), "frames": frames, "method": "lerp of mu between test images of different classes",
            **{k: sum(p[k] for p in per) / len(per) for k in keys}}


@torch.no_grad()
def latent_structure(decode, latent_dim: int, mu: torch.Tensor, logvar: torch.Tensor, test_images: torch.Tensor,
                     clf: ReferenceClassifier, n_prior: int, seed: int, batch: int = 1000,
                     labels: torch.Tensor | None = None) -> dict:
    """Prior holes (decode: z (B, D) -> images in [0, 1]), KL/MMD of mu and of z ~ q(z|x) against N(0, I), and
    with the test labels (N,) the smoothness of interpolations between mu of different classes.

    mu, logvar (N, D) are the posterior parameters of test_images (N, 1, 28, 28) in [0, 1]. Every draw comes
    from one generator seeded by `seed`: the global RNG is untouched.
    """
    g = torch.Generator().manual_seed(seed)
    z_prior = torch.randn(n_prior, latent_dim, generator=g)  # (n_prior, D)
    conf = torch.cat([confidences(decode(z_prior[i:i + batch]).float().cpu(), clf)
                      for i in range(0, n_prior, batch)])
    test_conf = confidences(test_images.float().cpu(), clf)
    mu, logvar = mu.double().cpu(), logvar.double().cpu()
    z_post = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g, dtype=torch.float64)  # (N, D)
    out = {"prior_holes": {"share": hole_share(conf), "test_share": hole_share(test_conf), "n_prior": n_prior,
                            "test_images": len(test_conf), "confidence_below": HOLE_CONFIDENCE,
                            "mean_confidence": float(conf.mean()), "test_mean_confidence": float(test_conf.mean())},
            "on_mu": against_prior(mu, g), "on_z": against_prior(z_post, g),
            "kernel": KERNEL, "latent_dim": latent_dim, "seed": seed,
            "note": "KL: closed form between the Gaussian fitted to the latents and N(0, I); MMD^2: unbiased, "
                    "on the first mmd_points latents against as many N(0, I) draws; on_z: one z ~ q(z|x) per "
                    "test image (the aggregate posterior)"}
    if labels is not None:  # last, from the same generator: the numbers above do not move
        out["interpolation"] = smoothness(lambda z: decode(z.float()), mu.float(), labels.cpu(), clf, g)
    return out
