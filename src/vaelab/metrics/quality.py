"""Sample quality of any image generator (VAE, DDPM, ...), measured in the reference classifier's features.

Every metric takes images (or their features), never a model, so the same code scores VAE samples,
DDPM samples and the anchors. Names: FD-LeNet is the Frechet distance of Heusel et al. (2017) on the
LeNet's penultimate features (not FID: these are not Inception features); precision/recall are those of
Kynkaanniemi et al. (2019); the classifier score is the Inception Score formula of Salimans et al. (2016)
applied to the LeNet's softmax.
"""

from __future__ import annotations

import json
import sys

import torch

from vaelab.engine.checkpoint import atomic_write_text
from vaelab.metrics.classifier import ReferenceClassifier, load_or_train
from vaelab.data.images import Images, to_unit
from vaelab.errors import VaelabError

PR_K = 3  # the k of the k-NN radii; Kynkaanniemi et al. recommend k = 3
BLOCK = 1000  # rows of a distance block: 1000 x 10000 float32 = 40 MB
ANCHOR_SEED = 12345


@torch.no_grad()
def features(images: torch.Tensor, clf: ReferenceClassifier, batch: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, F) and class probabilities (N, C) of images (N, 1, 28, 28) in [0, 1]."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    device = next(clf.net.parameters()).device
    feats, probs = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device, torch.float32)
        h = clf.net.features(x)  # (B, F)
        feats.append(h.cpu())
        probs.append(torch.softmax(clf.net.fc2(h), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (Dowson & Landau 1982)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    # tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2): the inner matrix is symmetric PSD, so eigh is exact
    # and stable, unlike scipy's sqrtm of the non-symmetric product (complex parts, NaNs when singular)
    root1 = sqrtm_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_cross
    return max(float(d), 0.0)  # rounding can leave -1e-12 for identical inputs


def fd_features(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between the Gaussian fits of two feature sets (N, F) and (M, F)."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def knn_radii(feats: torch.Tensor, k: int = PR_K) -> torch.Tensor:
    """Distance (N,) from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    f = feats.float()
    # k + 1 smallest per row: the point itself is its own nearest neighbour at distance 0
    return torch.cat([torch.cdist(f[i:i + BLOCK], f).topk(k + 1, dim=1, largest=False).values[:, k]
                      for i in range(0, len(f), BLOCK)])


def covered(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Bool (N,): whether each query lies in at least one ball B(centre_j, radius_j)."""
    q, c = queries.float(), centres.float()
    return torch.cat([(torch.cdist(q[i:i + BLOCK], c) <= radii[None]).any(1) for i in range(0, len(q), BLOCK)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features against real ones."""
    # caveat (Naeem et al. 2020): one real outlier has a large radius, and features of degenerate images
    # can all fall inside it; uniform noise scores precision 0.24 at N = 10,000 but recall 0: read both
    precision = covered(fake, real, knn_radii(real, k)).float().mean()  # fakes on the real manifold
    recall = covered(real, fake, knn_radii(fake, k)).float().mean()  # reals on the fake manifold
    return float(precision), float(recall)


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


def compare_features(real_f: torch.Tensor, fake_f: torch.Tensor, fake_p: torch.Tensor) -> dict:
    """Every sample-quality number of a generated set (features, probabilities) against real features."""
    precision, recall = precision_recall(real_f, fake_f)
    return {"fd_lenet": fd_features(real_f, fake_f), "precision": precision, "recall": recall,
            "classifier_score": classifier_score(fake_p), **class_histogram(fake_p)}


def reference_images(data: Images, n_ref: int) -> torch.Tensor:
    """The reference set: the first n_ref test images of the dataset (all 10,000 by default), float in [0, 1]."""
    return to_unit(data.test_x[:n_ref])


def check_classifier(data: Images, clf: ReferenceClassifier) -> None:
    """VaelabError if `clf` was trained on another dataset than `data` (one built by hand names none: accepted)."""
    if clf.dataset is not None and clf.dataset != data.dataset.name:
        raise VaelabError(f"the reference classifier was trained on {clf.dataset}, but the images are "
                          f"{data.dataset.title}: its features would not mean anything")


def anchors(data: Images, clf: ReferenceClassifier, n: int, n_ref: int, real_f: torch.Tensor | None = None,
            log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Floor (n training images) and ceiling (n uniform-noise images) against the reference set; cached."""
    key = f"{clf.sha256}:{n}x{n_ref}"  # anchors depend on the classifier and on both set sizes (FD is biased in N)
    path = clf.folder / "anchors.json" if clf.folder is not None else None
    cache = {}
    if path is not None and path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            cache = {}
        if key in cache:
            return cache[key]
    log(f"computing the sample-quality anchors for N = {n} (once per classifier and N)")
    if real_f is None:
        real_f = features(reference_images(data, n_ref), clf)[0]
    g = torch.Generator().manual_seed(ANCHOR_SEED)
    train_idx = torch.randperm(len(data.train_x), generator=g)[:n]
    floor_f, floor_p = features(to_unit(data.train_x[train_idx]), clf)
    noise_f, noise_p = features(torch.rand(n, 1, 28, 28, generator=g), clf)
    result = {"floor": {"what": f"{len(train_idx)} random training images vs the test set",
                        **compare_features(real_f, floor_f, floor_p)},
              "ceiling": {"what": f"{n} uniform-noise images vs the test set",
                          **compare_features(real_f, noise_f, noise_p)}}
    if path is not None:
        cache[key] = result
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n")
    return result


def sample_quality(images: torch.Tensor, data: Images, device: torch.device | str = "cpu", n_ref: int = 10000,
                   clf: ReferenceClassifier | None = None, with_anchors: bool = True) -> dict:
    """Score generated images (N, 1, 28, 28) in [0, 1] against the first n_ref test images of `data`'s dataset.

    `device` (a torch.device or 'cpu'/'cuda') runs the classifier; `clf` (trained on the same dataset)
    skips loading the dataset's cached one.
    Returns FD-LeNet, precision, recall, classifier score, class histogram, the settings, and the anchors.
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    if not (0 <= float(images.min()) and float(images.max()) <= 1):
        raise ValueError("images must be intensities in [0, 1]")
    n_ref = min(n_ref, len(data.test_x))
    if len(images) <= PR_K or n_ref <= PR_K:
        raise VaelabError(f"sample quality needs more than {PR_K} images on each side (k-NN radii); "
                          f"got {len(images)} generated and {n_ref} reference images")
    clf = clf or load_or_train(data, device)
    check_classifier(data, clf)
    real_f, _ = features(reference_images(data, n_ref), clf)
    fake_f, fake_p = features(images, clf)
    out = {"n": len(images), "n_ref": n_ref,
           "reference": f"first {n_ref} {data.dataset.title} test images (intensities in [0, 1])",
           "features": f"LeNet penultimate layer ({clf.net.feature_dim})", "pr_k": PR_K,
           "classifier": clf.describe(), **compare_features(real_f, fake_f, fake_p)}
    if with_anchors:
        out["anchors"] = anchors(data, clf, len(images), n_ref, real_f)
    return out
