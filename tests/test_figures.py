"""The latent-space figure's 2-D view (embed_2d): identity, padding, and t-SNE with the settings it names."""

import numpy as np
import pytest
from sklearn.manifold import TSNE
from sklearn.neighbors import KNeighborsClassifier

from vaelab.vae import figures


def clusters(n_per=40, k=5, dim=10, spread=0.3, seed=0):
    """k well-separated Gaussian clusters in `dim` dimensions: points (k * n_per, dim) and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread, labels


def one_nn_accuracy(points, labels):
    """Leave-one-out 1-NN accuracy: the nearest other point has the same label."""
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


def test_two_dimensions_are_shown_as_they_are():
    mu = np.random.default_rng(1).normal(size=(30, 2)).astype(np.float32)
    points, how = figures.embed_2d(mu)
    assert how == "identity" and np.array_equal(points, mu)


def test_one_dimension_is_padded_with_zeros():
    mu = np.random.default_rng(2).normal(size=(30, 1)).astype(np.float32)
    points, how = figures.embed_2d(mu)
    assert how == "identity" and points.shape == (30, 2)
    assert np.array_equal(points[:, 0], mu[:, 0]) and not points[:, 1].any()


def test_tsne_settings_are_pca_init_and_500_iterations():
    assert figures.TSNE_SETTINGS == {"init": "pca", "max_iter": 500}


def test_tsne_above_two_dimensions_uses_its_settings_and_keeps_clusters_apart(monkeypatch):
    made = []

    def spy(*args, **kw):  # the real TSNE, kept to read its parameters after the call
        made.append(TSNE(*args, **kw))
        return made[-1]

    monkeypatch.setattr(figures, "TSNE", spy)
    mu, labels = clusters()
    assert one_nn_accuracy(mu, labels) == 1.0
    points, how = figures.embed_2d(mu, seed=3)
    assert how == "t-SNE" and points.shape == (len(mu), 2) and np.isfinite(points).all()
    (tsne,) = made
    assert (tsne.n_components, tsne.init, tsne.max_iter, tsne.random_state) == (2, "pca", 500, 3)
    assert tsne.n_iter_ <= 500  # it ran with that budget
    assert one_nn_accuracy(points, labels) > 0.9  # clusters that are apart in mu stay apart in the picture
    knn = KNeighborsClassifier(1).fit(points[::2], labels[::2])
    assert knn.score(points[1::2], labels[1::2]) > 0.9
    again, _ = figures.embed_2d(mu, seed=3)
    assert np.allclose(again, points, atol=1e-4)  # PCA init and a seed: the same picture twice


@pytest.mark.parametrize("dim", [3, 10])
def test_tsne_is_used_for_every_dimension_above_two(dim):
    mu, labels = clusters(n_per=20, k=3, dim=dim, seed=dim)
    points, how = figures.embed_2d(mu)
    assert how == "t-SNE" and points.shape == (60, 2)
    assert one_nn_accuracy(points, labels) > 0.9
