"""Latent structure of a VAE: how well the posterior means separate the classes.

k-NN and linear-probe accuracy (fitted on training images, scored on test images) and the silhouette
score of the posterior means grouped by class. Labels are 0 .. C-1; C is the dataset's number of classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn import config_context
from sklearn.metrics import silhouette_score

from vaelab.data.images import Images, to_unit
from vaelab.vae.networks import VAE
from vaelab.vae.sample import encode_mu

TRAIN_BINARIZE_SEED = 20240602  # the training images' one draw for the latent probes (binarised runs)


def classes_of(*labels: torch.Tensor) -> int:
    """The number of classes that label tensors imply: the largest label + 1."""
    return int(max(int(y.max()) for y in labels if len(y))) + 1


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 k: int = 5, block: int = 1000, num_classes: int | None = None) -> float:
    """Accuracy of a k-NN majority vote (Euclidean; ties to the smaller label) fitted on train, scored on test."""
    train_f, test_f = train_f.float().cpu(), test_f.float().cpu()
    train_y, test_y = train_y.cpu(), test_y.cpu()
    c = num_classes or classes_of(train_y, test_y)
    correct = 0
    for i in range(0, len(test_f), block):
        nn_idx = torch.cdist(test_f[i:i + block], train_f).topk(k, dim=1, largest=False).indices  # (B, k)
        votes = F.one_hot(train_y[nn_idx], c).sum(1)  # (B, C)
        correct += int((votes.argmax(1) == test_y[i:i + block]).sum())
    return correct / len(test_f)


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 iters: int = 100, num_classes: int | None = None) -> float:
    """Test accuracy of a multinomial logistic regression on standardised features (L2 as sklearn's C=1)."""
    # full-batch L-BFGS in torch: sklearn's lbfgs took minutes on 60,000 x 50 features (and its BLAS threads
    # ignore VAELAB_THREADS); this is the same convex problem, solved in about a second
    c = num_classes or classes_of(train_y, test_y)
    mean, std = train_f.double().mean(0), train_f.double().std(0).clamp_min(1e-8)
    a, b = ((train_f.double() - mean) / std).cpu(), ((test_f.double() - mean) / std).cpu()
    y = train_y.cpu()
    w = torch.zeros(a.shape[1], c, dtype=torch.float64, requires_grad=True)  # (D, C)
    bias = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=iters, history_size=20, tolerance_grad=1e-8,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    l2 = 0.5 / len(a)  # sklearn: 0.5 ||w||^2 + C * sum CE, divided by n to use the mean CE

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == test_y.cpu()).double().mean())


def silhouette(f: torch.Tensor, y: torch.Tensor) -> float:
    """Mean silhouette coefficient of the points f (N, D) grouped by class y (-1 to 1; higher: tighter classes)."""
    with config_context(working_memory=128):  # MB per distance chunk (sklearn's default, 1 GB, doubles our peak)
        return float(silhouette_score(f.double().cpu().numpy(), y.cpu().numpy()))


def latent_probes(model: VAE, data: Images, mu_test: torch.Tensor, probe_train: int, knn_k: int,
                  binarize: bool) -> dict:
    """k-NN, linear-probe and silhouette scores of the posterior means (probes fitted on training images)."""
    device = mu_test.device
    n_train = min(probe_train, len(data.train_x))
    x = to_unit(data.train_x[:n_train].to(device))
    if binarize:
        x = torch.bernoulli(x, generator=torch.Generator(device=device).manual_seed(TRAIN_BINARIZE_SEED))
    mu_train, y_train = encode_mu(model, x), data.train_y[:n_train]
    y_test = data.test_y[:len(mu_test)]
    c = data.dataset.num_classes
    return {"train_images": n_train, "test_images": len(mu_test), "on": "posterior means mu",
            "knn_k": knn_k, "knn_accuracy": knn_accuracy(mu_train, y_train, mu_test, y_test, knn_k, num_classes=c),
            "linear_probe_accuracy": linear_probe(mu_train, y_train, mu_test, y_test, num_classes=c),
            "silhouette": silhouette(mu_test, y_test)}
