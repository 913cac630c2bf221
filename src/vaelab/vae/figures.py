"""The report's figures (section 2.5) from a trained run: samples, reconstructions, latent space, interpolations.

Each function computes what it shows from the saved model with a fixed seed, hands arrays to plots.py
and returns the paths it wrote.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import TSNE

from vaelab import plots
from vaelab.data.images import Images, to_unit
from vaelab.vae.run import VAERun
from vaelab.vae.sample import encode_mu


def describe(run: VAERun) -> str:
    """A short model label for titles, e.g. 'conv 32-64-128, latent 10, beta 1'."""
    m, t = run.cfg.model, run.cfg.train
    return f"{m.family} {m.arch}, latent {m.latent_dim}, beta {t.beta:g}"


def generator(seed: int) -> torch.Generator:
    """A CPU generator: figures draw their noise on the CPU so they are the same on any device."""
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def decode(run: VAERun, z: torch.Tensor) -> np.ndarray:
    """Decoded pixel means (n, 28, 28) of latent codes z (n, D)."""
    return run.model.decode(z.to(run.device)).cpu().numpy()[:, 0]


def mu_of(run: VAERun, x_u8: torch.Tensor) -> np.ndarray:
    """Posterior means (n, D) of uint8 images (n, 1, 28, 28), on the CPU."""
    return encode_mu(run.model, to_unit(x_u8.to(run.device))).cpu().numpy()


def samples(run: VAERun, seed: int = 0) -> Path:
    """5x5 grid of decoded z ~ N(0, I) (report 2.5.1-2.5.2)."""
    z = torch.randn(25, run.cfg.model.latent_dim, generator=generator(seed))
    return plots.image_grid(decode(run, z), 5, 5, f"Samples, z ~ N(0, I)\n{describe(run)}",
                            run.path / "samples.png")


def reconstructions(run: VAERun, data: Images, n: int = 10, seed: int = 0) -> Path:
    """n test images (top) above their reconstructions from the posterior mean (bottom)."""
    idx = torch.randperm(len(data.test_x), generator=generator(seed))[:n]
    x = data.test_x[idx]
    recon = decode(run, torch.from_numpy(mu_of(run, x)))
    images = np.concatenate([to_unit(x).numpy()[:, 0], recon])
    return plots.image_grid(images, 2, n, f"Test images and reconstructions\n{describe(run)}",
                            run.path / "reconstructions.png", row_labels=["input", "recon"])


# PCA init (deterministic, keeps the global layout) and 500 iterations: the same picture as the report's
# 1000 random-init iterations by 10-NN accuracy and trustworthiness, in about half the time
# (benchmarks/bench_tsne.py).
TSNE_SETTINGS = {"init": "pca", "max_iter": 500}


def embed_2d(mu: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D view of posterior means: themselves for D = 2, else t-SNE."""
    if mu.shape[1] <= 2:
        return (mu if mu.shape[1] == 2 else np.c_[mu, np.zeros(len(mu))]), "identity"
    tsne = TSNE(2, learning_rate="auto", random_state=seed, n_jobs=torch.get_num_threads(), **TSNE_SETTINGS)
    return tsne.fit_transform(mu.astype(np.float32)), "t-SNE"


def latent(run: VAERun, data: Images, seed: int = 0) -> list[Path]:
    """Test-set posterior means coloured by class (t-SNE above 2-D); plus the manifold when D = 2."""
    mu = mu_of(run, data.test_x)
    t0 = time.perf_counter()
    points, how = embed_2d(mu, seed)
    took = time.perf_counter() - t0
    d = run.cfg.model.latent_dim
    what = "t-SNE of mu" if how == "t-SNE" else "mu"
    title = f"Latent space of the {len(mu)} {data.dataset.title} test images ({what})\n{describe(run)}"
    axes = ("t-SNE 1", "t-SNE 2") if how == "t-SNE" else ("z_1", "z_2")
    paths = [plots.latent_scatter(points, data.test_y.numpy(), title, run.path / "latent.png", *axes,
                                  classes=data.dataset.classes)]
    if d == 2:
        n, extent = 20, 3.0
        grid = np.linspace(-extent, extent, n)
        zz = torch.tensor([[x, y] for y in grid[::-1] for x in grid], dtype=torch.float32)
        paths.append(plots.manifold(decode(run, zz), n, extent, f"Decoded latent manifold\n{describe(run)}",
                                    run.path / "manifold.png"))
    if how == "t-SNE":
        print(f"t-SNE of {len(mu)} points took {took:.1f} s")
    return paths


def interpolation(run: VAERun, data: Images, steps: int = 10, seed: int = 0) -> Path:
    """10-step lines between two random z (report 2.5.4) and between the codes of two test images."""
    g = generator(seed)
    z1, z2 = torch.randn(2, run.cfg.model.latent_dim, generator=g)
    ca, cb = data.dataset.interpolation_pair  # two different classes (digits 3 and 8 for MNIST)
    a = int(torch.nonzero(data.test_y == ca)[0])  # the first test image of each: chosen reproducibly
    b = int(torch.nonzero(data.test_y == cb)[0])
    m1, m2 = torch.from_numpy(mu_of(run, data.test_x[[a, b]]))
    r = torch.linspace(0, 1, steps)[:, None]  # (steps, 1)
    rows = [(1 - r) * z1 + r * z2, (1 - r) * m1 + r * m2]  # each (steps, D)
    images = np.concatenate([decode(run, z) for z in rows])
    return plots.image_grid(images, 2, steps, f"Latent interpolation, {steps} steps\n{describe(run)}",
                            run.path / "interpolation.png", row_labels=["random z", f"test {data.dataset.class_name(ca)} -> {data.dataset.class_name(cb)}"])


def all_figures(run: VAERun, data: Images, seed: int = 0) -> list[Path]:
    """Every figure of the report for one run."""
    return [samples(run, seed), reconstructions(run, data, seed=seed), *latent(run, data, seed),
            interpolation(run, data, seed=seed)]
