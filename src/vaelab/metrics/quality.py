"""Sample quality of any image generator (VAE, DDPM, ...), measured in the reference classifier's features.

Every metric takes images (or their features), never a model, so the same code scores VAE samples,
DDPM samples and the anchors. Names: FD-LeNet is the Frechet distance of Heusel et al. (2017) on the
LeNet's penultimate features (not FID: these are not Inception features); precision/recall are those of
Kynkaanniemi et al. (2019), density/coverage those of Naeem et al. (2020); the classifier score is the
Inception Score formula of Salimans et al. (2016) applied to the LeNet's softmax. Each comes with a 95%
bootstrap interval over the generated images (intervals.py).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import torch

from vaelab.engine.checkpoint import atomic_write_text
from vaelab.metrics.classifier import ReferenceClassifier, features
from vaelab.metrics.reference import anchor_files, images_digest, read_anchor_cache, resolve
from vaelab.data.images import Images, to_unit
from vaelab.errors import VaelabError
from vaelab.metrics import intervals

PR_K = 3  # the k of the k-NN radii; Kynkaanniemi et al. recommend k = 3
DC_K = 5  # the k of density/coverage; Naeem et al. recommend k = 5
KEPT = 32  # fakes kept per real ball for the bootstrap: a resample misses 32 given fakes with odds e^-32
BLOCK = 1000  # rows of a distance block: 1000 x 10000 float32 = 40 MB
ANCHOR_SEED = 12345
Stats = "tuple[torch.Tensor, torch.Tensor] | None"  # (mean (F,), covariance (F, F)) of real features
ANCHOR_KEYS = {"fd_lenet", "precision", "recall", "density", "coverage", "classifier_score"}  # a cached anchor has each


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distances(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor,
                      root1: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) Frechet distances from one Gaussian (F,), (F, F) to each of B Gaussians (B, F), (B, F, F), in float64."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    # tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2): the inner matrix is symmetric PSD, so eigh is exact
    # and stable, unlike scipy's sqrtm of the non-symmetric product (complex parts, NaNs when singular);
    # root1, S1^(1/2) when the caller has it already (the bootstrap: one reference set, many resamples)
    root1 = sqrtm_psd(sigma1) if root1 is None else root1.double()
    inner = root1 @ sigma2 @ root1
    tr_cross = torch.linalg.eigvalsh((inner + inner.mT) / 2).clamp(min=0).sqrt().sum(-1)
    d = (mu1 - mu2).pow(2).sum(-1) + sigma1.trace() + sigma2.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * tr_cross
    return d.clamp(min=0)  # rounding can leave -1e-12 for identical inputs


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (Dowson & Landau 1982)."""
    return float(frechet_distances(mu1, sigma1, mu2[None], sigma2[None])[0])


def fd_features(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between the Gaussian fits of two feature sets (N, F) and (M, F)."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def knn_radii_of(feats: torch.Tensor, ks: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """For each k of `ks`, the distance (N,) from each point to its k-th nearest neighbour (itself excluded)."""
    f = feats.float()
    # max(ks) + 1 smallest per row: the point itself is its own nearest neighbour at distance 0
    top = torch.cat([torch.cdist(f[i:i + BLOCK], f).topk(max(ks) + 1, dim=1, largest=False).values
                     for i in range(0, len(f), BLOCK)])
    return tuple(top[:, k] for k in ks)


def knn_radii(feats: torch.Tensor, k: int = PR_K) -> torch.Tensor:
    """Distance (N,) from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    return knn_radii_of(feats, (k,))[0]


def covered(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Bool (N,): whether each query lies in at least one ball B(centre_j, radius_j)."""
    q, c = queries.float(), centres.float()
    return torch.cat([(torch.cdist(q[i:i + BLOCK], c) <= radii[None]).any(1) for i in range(0, len(q), BLOCK)])


def first_members(mask: torch.Tensor, kept: int = KEPT) -> torch.Tensor:
    """(rows, kept) column indices of up to `kept` True entries in each row of a bool (rows, n) mask; n pads."""
    n = mask.shape[1]
    vals, cols = mask.to(torch.uint8).topk(min(kept, n), dim=1)
    cols = torch.where(vals > 0, cols, n)
    return torch.cat([cols, torch.full((len(cols), kept - cols.shape[1]), n)], 1)  # n < kept: pad to `kept` wide


@dataclass
class Neighbourhoods:
    """Who lies in whose k-NN ball, between a generated set (N) and the reference set (M): every k-NN metric."""

    in_real_ball: torch.Tensor  # (N,) bool: fake j lies in some real PR_K ball (precision)
    real_balls: torch.Tensor  # (N,) long: how many real DC_K balls hold fake j (density)
    ball_fakes: torch.Tensor  # (M,) long: how many fakes lie in real i's DC_K ball (coverage)
    fake_balls: torch.Tensor  # (M,) long: how many fake PR_K balls hold real i (recall)
    ball_members: torch.Tensor  # (M, KEPT): up to KEPT fakes in real i's DC_K ball, N pads (coverage resamples)
    covering_fakes: torch.Tensor  # (M, KEPT): up to KEPT fakes whose PR_K ball holds real i, N pads (recall's)
    dc_k: int

    def precision(self) -> float:
        """Share of fakes inside some real ball (Kynkaanniemi et al. 2019)."""
        return float(self.in_real_ball.double().mean())

    def recall(self) -> float:
        """Share of reals inside some fake ball (Kynkaanniemi et al. 2019)."""
        return float((self.fake_balls > 0).double().mean())

    def density(self) -> float:
        """Real balls holding a fake, per fake, over k (Naeem et al. 2020): about 1 when fakes match the reals."""
        return float(self.real_balls.double().mean() / self.dc_k)

    def coverage(self) -> float:
        """Share of reals whose ball holds at least one fake (Naeem et al. 2020)."""
        return float((self.ball_fakes > 0).double().mean())


def neighbourhoods(real: torch.Tensor, fake: torch.Tensor, pr_k: int = PR_K, dc_k: int = DC_K,
                   kept: int = KEPT) -> Neighbourhoods:
    """The k-NN memberships of fake (N, F) against real (M, F) features, from 1000-row distance blocks."""
    r, f = real.float(), fake.float()
    r_pr, r_dc = knn_radii_of(r, (pr_k, dc_k))
    f_pr = knn_radii(f, pr_k)
    n = len(f)
    in_ball, balls = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    ball_fakes, fake_balls, members, covering = [], [], [], []
    for i in range(0, len(r), BLOCK):
        d = torch.cdist(r[i:i + BLOCK], f)  # (block, N): reals as rows, so each real's fakes are a row
        in_ball |= (d <= r_pr[i:i + BLOCK, None]).any(0)
        inside = d <= r_dc[i:i + BLOCK, None]  # fake j in real i's DC_K ball
        balls += inside.sum(0, dtype=torch.int32)  # int32: twice as fast as a bool's default int64 sum
        ball_fakes.append(inside.sum(1, dtype=torch.int32))
        members.append(first_members(inside, kept))
        held = d <= f_pr[None]  # real i in fake j's PR_K ball
        fake_balls.append(held.sum(1, dtype=torch.int32))
        covering.append(first_members(held, kept))
    return Neighbourhoods(in_ball, balls, torch.cat(ball_fakes), torch.cat(fake_balls), torch.cat(members),
                          torch.cat(covering), dc_k)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features against real ones."""
    # caveat (Naeem et al. 2020): one real outlier has a large radius, and features of degenerate images
    # can all fall inside it: 10,000 uniform-noise images score precision 0.24 on MNIST (0.96 on Fashion-MNIST)
    # but recall 0 and coverage 0.0006; read them with density/coverage
    nb = neighbourhoods(real, fake, pr_k=k)
    return nb.precision(), nb.recall()


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of fake features against real ones, with k-NN radii of the reals."""
    nb = neighbourhoods(real, fake, dc_k=k)
    return nb.density(), nb.coverage()


def classifier_score(probs: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): the Inception Score formula on the reference classifier (1 to C classes)."""
    p = probs.double()
    p_y = p.mean(0, keepdim=True)  # (1, C) marginal
    kl = (p * ((p + eps).log() - (p_y + eps).log())).sum(1)  # (N,)
    return float(kl.mean().exp())


def class_histogram(probs: torch.Tensor) -> dict:
    """Predicted-class counts, their entropy (nats; ln C is uniform: 2.303 for 10) and the rarest class's share."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1])
    share = counts.double() / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    return {"class_histogram": counts.tolist(), "class_entropy": entropy,
            "rarest_class_share": float(share.min()), "rarest_class": int(share.argmin())}


def compare_features(real_f: torch.Tensor, fake_f: torch.Tensor, fake_p: torch.Tensor,
                     nb: Neighbourhoods | None = None, real_stats: Stats = None) -> dict:
    """Every sample-quality number of a generated set (features, probabilities) against real features.

    real_stats: the real side's (mean, covariance) for FD, shipped with a pinned classifier; None: from real_f.
    """
    nb = neighbourhoods(real_f, fake_f) if nb is None else nb
    real_stats = gaussian_stats(real_f) if real_stats is None else real_stats
    return {"fd_lenet": frechet_distance(*real_stats, *gaussian_stats(fake_f)), "precision": nb.precision(), "recall": nb.recall(),
            "density": nb.density(), "coverage": nb.coverage(), "classifier_score": classifier_score(fake_p),
            **class_histogram(fake_p)}


def replicates(real_f: torch.Tensor, fake_f: torch.Tensor, fake_p: torch.Tensor, nb: Neighbourhoods,
               idx: torch.Tensor, real_stats: Stats = None) -> dict[str, torch.Tensor]:
    """Each metric (B,) recomputed on the resamples idx (B, N) of the generated set, from per-sample quantities."""
    n = len(fake_f)
    real_stats = gaussian_stats(real_f) if real_stats is None else real_stats
    return {"fd_lenet": frechet_distances(*real_stats, *intervals.moment_replicates(fake_f, idx)),
            "precision": intervals.mean_replicates(nb.in_real_ball, idx),
            "recall": intervals.any_replicates(nb.covering_fakes, idx, n),  # with the full set's fake radii
            "density": intervals.mean_replicates(nb.real_balls, idx) / nb.dc_k,
            "coverage": intervals.any_replicates(nb.ball_members, idx, n),
            "classifier_score": intervals.score_replicates(fake_p, idx)}


def sample_intervals(real_f: torch.Tensor, fake_f: torch.Tensor, fake_p: torch.Tensor, nb: Neighbourhoods,
                     point: dict, resamples: int = intervals.RESAMPLES, seed: int = 0,
                     level: float = intervals.LEVEL, real_stats: Stats = None) -> dict:
    """'<metric>_ci': [low, high] around each value of `point` that `replicates` resamples; 'interval': what."""
    t0 = time.perf_counter()
    idx = intervals.resample_indices(len(fake_f), resamples, seed)
    with intervals.one_thread():
        reps = replicates(real_f, fake_f, fake_p, nb, idx, real_stats)
    out = {f"{k}_ci": intervals.shifted_interval(v, point[k], level) for k, v in reps.items()}
    out["interval"] = {**intervals.describe(len(fake_f), resamples, seed, level),
                       "shift": {k: intervals.shift(v, point[k]) for k, v in reps.items()},
                       "seconds": round(time.perf_counter() - t0, 1)}
    return out


def reference_images(data: Images, n_ref: int) -> torch.Tensor:
    """The reference set: the first n_ref test images of the dataset (all 10,000 by default), float in [0, 1]."""
    return to_unit(data.test_x[:n_ref])


def check_classifier(data: Images, clf: ReferenceClassifier) -> None:
    """VaelabError if `clf` was trained on another dataset than `data` (one built by hand names none: accepted)."""
    if clf.dataset is not None and clf.dataset != data.dataset.name:
        raise VaelabError(f"the reference classifier was trained on {clf.dataset}, but the images are "
                          f"{data.dataset.title}: its features would not mean anything")


def real_side(data: Images, clf: ReferenceClassifier, n_ref: int) -> tuple[torch.Tensor, Stats]:
    """Features of the first n_ref test images and, over the full test set, the classifier's shipped statistics."""
    real_f, _ = features(reference_images(data, n_ref), clf)
    # FD's real side: the statistics shipped with a pinned classifier (the same bytes everywhere), when they
    # describe the same images; else those of the features just computed
    shipped = clf.test_stats
    same = shipped is not None and n_ref == len(data.test_x) and shipped[2] == images_digest(data.test_x)
    return real_f, (shipped[:2] if same else gaussian_stats(real_f))


def anchors(data: Images, clf: ReferenceClassifier, n: int, n_ref: int, real_f: torch.Tensor | None = None,
            log=lambda m: print(m, file=sys.stderr), real_stats: Stats = None) -> dict:
    """Floor (n training images) and ceiling (n uniform-noise images) against the reference set; cached."""
    # anchors depend on the classifier, both set sizes (FD is biased in N) and the k of each k-NN metric: anchors
    # cached before density/coverage existed sit under another key (no ':dc5') and are recomputed, not reused
    key = f"{clf.sha256}:{n}x{n_ref}:pr{PR_K}:dc{DC_K}"
    sources, target = anchor_files(clf)
    for path in sources:
        found = read_anchor_cache(path).get(key)
        found = found if isinstance(found, dict) else {}
        if all(isinstance(found.get(a), dict) and ANCHOR_KEYS <= set(found[a]) for a in ("floor", "ceiling")):
            return found
    log(f"computing the sample-quality anchors for N = {n} (once per classifier and N)")
    if real_f is None:
        real_f, real_stats = real_side(data, clf, n_ref)
    g = torch.Generator().manual_seed(ANCHOR_SEED)
    train_idx = torch.randperm(len(data.train_x), generator=g)[:n]
    floor_f, floor_p = features(to_unit(data.train_x[train_idx]), clf)
    noise_f, noise_p = features(torch.rand(n, 1, 28, 28, generator=g), clf)
    result = {"floor": {"what": f"{len(train_idx)} random training images vs the test set",
                        **compare_features(real_f, floor_f, floor_p, real_stats=real_stats)},
              "ceiling": {"what": f"{n} uniform-noise images vs the test set",
                          **compare_features(real_f, noise_f, noise_p, real_stats=real_stats)}}
    if target is not None:
        try:  # a cache that cannot be written costs time next run, never the result
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, json.dumps({**read_anchor_cache(target), key: result}, indent=1) + "\n")
        except OSError as e:
            log(f"note: anchors not cached ({e})")
    return result


def sample_quality(images: torch.Tensor, data: Images, device: torch.device | str = "cpu", n_ref: int = 10000,
                   clf: ReferenceClassifier | None = None, with_anchors: bool = True,
                   resamples: int = intervals.RESAMPLES, seed: int = 0) -> dict:
    """Score generated images (N, 1, 28, 28) in [0, 1] against the first n_ref test images of `data`'s dataset.

    `device` (a torch.device or 'cpu'/'cuda') runs the classifier; `clf` (trained on the same dataset)
    replaces the dataset's pinned one.
    Returns FD-LeNet, precision, recall, density, coverage, classifier score, each with its 95% bootstrap
    interval over the N images ('<name>_ci'; `resamples` of them, seeded by `seed`; none when 0), the class
    histogram, the settings, and the anchors.
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    if not (0 <= float(images.min()) and float(images.max()) <= 1):
        raise ValueError("images must be intensities in [0, 1]")
    n_ref = min(n_ref, len(data.test_x))
    k = max(PR_K, DC_K)
    if len(images) <= k or n_ref <= k:
        raise VaelabError(f"sample quality needs more than {k} images on each side (k-NN radii); "
                          f"got {len(images)} generated and {n_ref} reference images")
    clf = clf or resolve(data, device)
    check_classifier(data, clf)
    real_f, real_stats = real_side(data, clf, n_ref)
    fake_f, fake_p = features(images, clf)
    nb = neighbourhoods(real_f, fake_f)
    out = {"n": len(images), "n_ref": n_ref,
           "reference": f"first {n_ref} {data.dataset.title} test images (intensities in [0, 1])",
           "features": f"LeNet penultimate layer ({clf.net.feature_dim})", "pr_k": PR_K, "dc_k": DC_K,
           "classifier": clf.describe(), **compare_features(real_f, fake_f, fake_p, nb, real_stats)}
    if resamples:
        out.update(sample_intervals(real_f, fake_f, fake_p, nb, out, resamples, seed, real_stats=real_stats))
    if with_anchors:
        out["anchors"] = anchors(data, clf, len(images), n_ref, real_f, real_stats=real_stats)
    return out
