"""The report's figure 4 from a trained DDPM run: (a) noising, (b) noise to digit, (c) samples.

Plus samples.png after each training epoch. Sampling itself is vaelab.diffusion.sample. All noise is drawn
from generators seeded by `seed`, so a figure is the same each time on one device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab import plots
from vaelab.data.registry import get
from vaelab.data.images import Images
from vaelab.diffusion.sample import eps_model, generate, sample_images, sample_loop, sampler_label
from vaelab.diffusion.schedule import NoiseSchedule, sampler_named
from vaelab.diffusion.run import DDPMRun
from vaelab.data.images import to_signed

FIG_A, FIG_B, FIG_C = "figure4a_noising.png", "figure4b_reverse.png", "figure4c_samples.png"


def describe(run: DDPMRun) -> str:
    """A short label for titles, e.g. 'UNet 32-64-128-256, linear T=1000, EMA weights'."""
    m, s = run.cfg.model, run.cfg.schedule
    return f"UNet {m.widths}, {s.kind} T={s.timesteps}, {'EMA' if run.ema else 'raw'} weights"


def to_unit_np(x: torch.Tensor) -> np.ndarray:
    """Images (n, 1, 28, 28) in [-1, 1] to a numpy array (n, 28, 28) in [0, 1] for plotting."""
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu().numpy()[:, 0]


def image_table(images: np.ndarray, rows: int, cols: int, title: str, path: Path,
                col_labels: list[str], row_labels: list[str] | None = None) -> Path:
    """Images (rows * cols, 28, 28) in [0, 1] with a label above each column (and before each row)."""
    fig, axes = plots.plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for c, label in enumerate(col_labels):
        axes[0, c].set_title(label, fontsize=9)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=12, y=1.0, va="bottom")  # above the column labels, not over them
    return plots.save(fig, path)


def noising(run: DDPMRun, data: Images, n: int = 4, seed: int = 0,
            ts: tuple[int, ...] = (0, 50, 100, 200, 300, 500, 700, 999)) -> Path:
    """Figure 4a: n test digits (rows) pushed through q(x_t | x0) at several t (columns)."""
    s, dev = run.schedule, run.device
    T = s.T
    ts = sorted({min(round(t * (T - 1) / 999), T - 1) for t in ts})  # the same fractions of any T
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same digits and noise on every device
    x0 = to_signed(data.test_x[torch.randperm(len(data.test_x), generator=g)[:n]])  # (n, 1, 28, 28)
    eps = torch.randn(x0.shape, generator=g)  # one noise per digit, scaled differently at each t
    x0, eps = x0.to(dev), eps.to(dev)  # beside the schedule's tables
    cols = [s.add_noise(x0, torch.full((n,), t, device=dev), eps) for t in ts]  # each (n, 1, 28, 28)
    grid = to_unit_np(torch.stack(cols, 1).flatten(0, 1))  # row-major: digit, then t
    labels = [f"t={t}\n" + r"$\bar\alpha$=" + f"{s.alpha_bar[t].item():.2g}" for t in ts]
    return image_table(grid, n, len(ts), f"Forward (noising) process q(x_t | x0)\n{s.kind} schedule, T={T}",
                       run.path / FIG_A, labels)


def reverse(run: DDPMRun, n: int = 4, snapshots: int = 10, sampler: str = "ddpm", steps: int | None = None,
            eta: float | None = None, seed: int = 0) -> Path:
    """Figure 4b: n chains (rows) from noise x_T to a digit, shown at `snapshots` evenly spaced steps."""
    T, kept = run.schedule.T, {}
    ts = sampler_named(sampler).timesteps(T, steps)
    visited = ts + [-1]  # the state after the last step is x0 ("t=-1")
    show = {visited[round(i * (len(visited) - 1) / (snapshots - 1))] for i in range(snapshots)}
    keep = lambda t, x: kept.__setitem__(t, x.clone()) if t in show else None  # noqa: E731
    g = torch.Generator(device=run.device).manual_seed(seed)
    x_T = torch.randn((n, 1, 28, 28), generator=g, device=run.device)
    kept[ts[0]] = x_T
    sample_loop(run.schedule, eps_model(run.model, run.device, run.cfg.train.amp), x_T, sampler, steps, eta, g, keep)
    order = sorted(kept, reverse=True)
    grid = to_unit_np(torch.stack([kept[t] for t in order], 1).flatten(0, 1))  # (n * len(order), 28, 28)
    labels = ["x0" if t < 0 else f"t={t}" for t in order]
    return image_table(grid, n, len(order), f"Reverse process, noise to image ({sampler_label(sampler, steps, T, eta)})"
                       f"\n{describe(run)}", run.path / FIG_B, labels)


def samples_grid(run: DDPMRun, side: int = 8, sampler: str = "ddim", steps: int | None = None,
                 eta: float | None = None, seed: int = 0, path: Path | None = None) -> tuple[Path, float]:
    """Figure 4c: side x side generated digits; returns the path and the images per second."""
    images, rate = generate(run, side * side, sampler, steps, eta, seed)
    label = sampler_label(sampler, steps, run.schedule.T, eta)
    title = f"Generated {get(run.cfg.dataset).title} images, {label} ({rate:.3g} images/s on {run.device.type})\n{describe(run)}"
    return plots.image_grid(images.numpy()[:, 0], side, side, title, path or run.path / FIG_C), rate


def progress_grid(run_dir: Path, epoch: int, model, schedule: NoiseSchedule, device: torch.device,
                  side: int = 5, amp: bool = True) -> torch.Tensor:
    """samples.png during training: side x side samples of the EMA weights, with the annex's sampler;
    returns them (side * side, 1, 28, 28) in [0, 1] (for TensorBoard).

    Not DDIM-50, though 20 times cheaper: on a briefly trained net it gives blobs where the
    1000-step ancestral sampler already draws digits.
    """
    x = sample_images(model, schedule, side * side, device, "ddpm", None, seed=0, amp=amp)
    plots.image_grid(to_unit_np(x), side, side, f"After epoch {epoch}: DDPM {schedule.T} steps, EMA weights",
                     Path(run_dir) / "samples.png")
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


def all_figures(run: DDPMRun, data: Images, sampler: str = "ddpm", steps: int | None = None,
                eta: float | None = None, seed: int = 0) -> list[Path]:
    """Figure 4 (a, b, c) for one run; b and c with the given sampler (default the annex's)."""
    return [noising(run, data, seed=seed), reverse(run, sampler=sampler, steps=steps, eta=eta, seed=seed),
            samples_grid(run, sampler=sampler, steps=steps, eta=eta, seed=seed)[0]]
