"""How a VAE and a DDPM represent digits (the report's closing question), measured with one protocol for both.

Three measurements on the same test images: linear probes and k-NN on each representation (the VAE's mu and
z; the DDPM's UNet blocks at a grid of noise levels t, metrics/features.py), DDIM inversion's round trip
x0 -> x_T -> x0 for several step counts S, and interpolation between test digits of different classes (VAE:
lerp and slerp of mu; DDPM: slerp of DDIM-inverted x_T decoded by DDIM, eta 0) measured in the reference
classifier's features. The result is data (representations.json); markdown() and the figures render it,
markdown() with the runs' paths relative to the folder of the page that shows them (`base`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vaelab import plots
from vaelab.data.registry import get as get_dataset
from vaelab.data.images import Images, to_unit
from vaelab.diffusion.invert import ddim_invert
from vaelab.diffusion.sample import eps_model, sample_loop
from vaelab.diffusion.run import DDPMRun, open_ddpm
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.errors import VaelabError
from vaelab.data.images import Data, images_for
from vaelab.metrics.quality import features
from vaelab.metrics.reference import resolve
from vaelab.metrics.structure import different_class_pairs
from vaelab.metrics.features import path_metrics, probe, slerp, unet_blocks, unet_features, vae_latents
from vaelab.studies.markdown import md_table, shown_path, timing_lines
from vaelab.vae.run import VAERun, open_vae

FORMAT = "vaelab-representations-1"
JSON = "representations.json"


@dataclass(frozen=True)
class Budget:
    """How much work `vaelab represent` does; saved in representations.json beside the numbers."""

    pool: int = 6000  # training images whose features are computed; each probe seed draws `train` of them
    train: int = 5000
    test: int = 2000  # test images every probe is scored on
    ts: tuple[int, ...] = (1, 11, 51, 101, 201, 500, 900)  # DDPM noise levels (0-based steps) of the UNet features
    pairs: int = 6  # interpolation pairs (test digits of different classes)
    frames: int = 10
    steps: int = 50  # DDIM steps of the interpolation's inversion and decoding
    invert_steps: tuple[int, ...] = (10, 20, 50, 100, 1000)  # S of the inversion round trip
    invert_images: int = 16
    seed: int = 0


DEFAULT = Budget()
QUICK = Budget(pool=600, train=500, test=300, ts=(1, 51, 201), pairs=2, frames=6, steps=10, invert_steps=(5, 10),
               invert_images=4)


def fitted(b: Budget, data: Images, log) -> Budget:
    """The budget shrunk to a dataset smaller than it (a subset, a test folder): the pool to the training images,
    each seed's train subset in the same proportion of it, the test images to the test set."""
    pool, test = min(b.pool, len(data.train_x)), min(b.test, len(data.test_x))
    if (pool, test) == (b.pool, b.test):
        return b
    train = max(1, min(b.train, b.train * pool // b.pool))
    log(f"the dataset holds {len(data.train_x)} training and {len(data.test_x)} test images: probes use a pool of "
        f"{pool}, {train} per seed, {test} test images")
    return replace(b, pool=pool, train=train, test=test, invert_images=min(b.invert_images, test))


def probe_rows(vae: VAERun, ddpm: DDPMRun, data: Images, b: Budget, log) -> list[dict]:
    """One row per representation: (model, representation, t, block) and its probe numbers."""
    x_train, y_train = to_unit(data.train_x[:b.pool]), data.train_y[:b.pool]
    x_test, y_test = to_unit(data.test_x[:b.test]), data.test_y[:b.test]
    c = data.dataset.num_classes
    rows = []
    train_lat, test_lat = vae_latents(vae.model, x_train, b.seed), vae_latents(vae.model, x_test, b.seed + 1)
    for name in ("mu", "z"):
        rows.append({"model": "VAE", "representation": name, "t": None, "block": None,
                     **probe(train_lat[name], y_train, test_lat[name], y_test, b.train, num_classes=c)})
    blocks = unet_blocks(ddpm.model)
    for t in b.ts:
        log(f"DDPM features at t = {t}: {len(blocks)} blocks on {b.pool + b.test} images")
        f_train = unet_features(ddpm.model, ddpm.schedule, x_train * 2 - 1, t, b.seed, blocks)
        f_test = unet_features(ddpm.model, ddpm.schedule, x_test * 2 - 1, t, b.seed + 1, blocks)
        for block in blocks:
            what = "h-space" if block == "bottleneck" else "decoder block" if block.startswith("dec") else "encoder block"
            rows.append({"model": "DDPM", "representation": what, "t": t, "block": block,
                         **probe(f_train[block], y_train, f_test[block], y_test, b.train, num_classes=c)})
    return rows


def inversion_rows(ddpm: DDPMRun, data: Images, b: Budget) -> list[dict]:
    """x0 -> x_T -> x0 with S steps each way, for each S: the error on b.invert_images test images, and the time."""
    eps = eps_model(ddpm.model, ddpm.device, ddpm.cfg.train.amp)
    x0 = (to_unit(data.test_x[:b.invert_images]) * 2 - 1).to(ddpm.device)  # (n, 1, 28, 28) in [-1, 1]
    rows = []
    for s in b.invert_steps:
        t0 = time.perf_counter()
        x_T = ddim_invert(ddpm.schedule, eps, x0, s)
        t1 = time.perf_counter()
        back = sample_loop(ddpm.schedule, eps, x_T, "ddim", s, 0.0)
        t2 = time.perf_counter()
        err = ((back - x0) / 2).cpu()  # in [0, 1] intensity units
        rows.append({"steps": s, "images": len(x0), "rmse": float(err.pow(2).mean().sqrt()),
                     "max_abs": float(err.abs().max()), "x_T_std": float(x_T.std()),
                     "invert_ms_per_image": 1000 * (t1 - t0) / len(x0),
                     "decode_ms_per_image": 1000 * (t2 - t1) / len(x0)})
    return rows


def pairs_of(data: Images, n: int, seed: int) -> list[tuple[int, int]]:
    """n pairs of test-image indices of different classes, drawn from `seed`."""
    return different_class_pairs(data.test_y, n, torch.Generator().manual_seed(seed))  # the evaluation's rule


@torch.no_grad()
def interpolation_frames(vae: VAERun, ddpm: DDPMRun, x: torch.Tensor, b: Budget) -> dict[str, torch.Tensor]:
    """Method -> frames (pairs, frames, 1, 28, 28) in [0, 1] between the image pairs x (pairs, 2, 1, 28, 28)."""
    r = torch.linspace(0, 1, b.frames)[:, None]  # (frames, 1)
    mu = vae_latents(vae.model, x.flatten(0, 1), b.seed)["mu"].view(len(x), 2, -1)  # (pairs, 2, D)
    decode = lambda z: vae.model.decode(z.to(vae.device)).cpu()  # noqa: E731
    out = {"VAE lerp": torch.stack([decode((1 - r) * m[0] + r * m[1]) for m in mu]),
           "VAE slerp": torch.stack([decode(slerp(m[0], m[1], r)) for m in mu])}
    eps = eps_model(ddpm.model, ddpm.device, ddpm.cfg.train.amp)
    x_T = ddim_invert(ddpm.schedule, eps, (x.flatten(0, 1) * 2 - 1).to(ddpm.device), b.steps).cpu()
    x_T = x_T.view(len(x), 2, -1)  # (pairs, 2, 784)
    z = torch.cat([slerp(p[0], p[1], r) for p in x_T]).view(-1, 1, 28, 28)  # (pairs * frames, 1, 28, 28)
    frames = sample_loop(ddpm.schedule, eps, z.to(ddpm.device), "ddim", b.steps, 0.0).cpu()
    out["DDPM slerp of DDIM x_T"] = ((frames + 1) / 2).view(len(x), b.frames, 1, 28, 28)
    return out


def interpolation(vae: VAERun, ddpm: DDPMRun, data: Images, clf, b: Budget) -> tuple[dict, dict]:
    """Per method: the path metrics of every pair and their means; and the frames, for the figure."""
    pairs = pairs_of(data, b.pairs, b.seed)
    x = torch.stack([to_unit(data.test_x[[i, j]]) for i, j in pairs])  # (pairs, 2, 1, 28, 28)
    frames = interpolation_frames(vae, ddpm, x, b)
    result = {}
    for method, f in frames.items():
        per_pair = []
        for (i, j), path in zip(pairs, f):
            feats, probs = features(path, clf)
            per_pair.append({"pair": [i, j], "labels": [int(data.test_y[i]), int(data.test_y[j])],
                             **path_metrics(feats, probs, (int(data.test_y[i]), int(data.test_y[j])))})
        keys = ("path_length", "largest_jump", "mean_confidence", "min_confidence", "off_class_share")
        result[method] = {"pairs": per_pair, **{k: float(np.mean([p[k] for p in per_pair])) for k in keys}}
    return result, frames


def measure(vae_dir: Path, ddpm_dir: Path, data: Data = None, b: Budget = DEFAULT, device: str = "auto",
            log=print, data_dir=None) -> dict:
    """Every measurement of `vaelab represent` on a VAE and a DDPM of one dataset; the result (with frames)."""
    vae, ddpm = open_vae(vae_dir, device), open_ddpm(ddpm_dir, device)
    if vae.cfg.dataset != ddpm.cfg.dataset:
        raise VaelabError(f"the VAE {vae_dir} was trained on {get_dataset(vae.cfg.dataset).title} and the DDPM "
                          f"{ddpm_dir} on {get_dataset(ddpm.cfg.dataset).title}: compare runs of one dataset")
    if b.train > b.pool:
        raise VaelabError(f"the probes' train subset ({b.train}) must not exceed the pool ({b.pool})")
    data = images_for(vae.cfg.dataset, data, data_dir)
    b = fitted(b, data, log)
    clf = resolve(data, "cpu")
    seconds, t0 = {}, time.perf_counter()
    log("probes on the VAE's mu and z and on the DDPM's UNet blocks")
    probes = probe_rows(vae, ddpm, data, b, log)
    seconds["probes"], t0 = time.perf_counter() - t0, time.perf_counter()
    log(f"DDIM inversion round trip, S = {', '.join(map(str, b.invert_steps))}")
    inversion = inversion_rows(ddpm, data, b)
    seconds["inversion"], t0 = time.perf_counter() - t0, time.perf_counter()
    log(f"interpolation of {b.pairs} pairs, {b.frames} frames")
    interp, frames = interpolation(vae, ddpm, data, clf, b)
    seconds["interpolation"] = time.perf_counter() - t0
    return {"format": FORMAT, "vae": str(Path(vae_dir).resolve()), "ddpm": str(Path(ddpm_dir).resolve()),
            "dataset": data.dataset.name,
            "vae_input": "grayscale test images in [0, 1] (a binarised VAE sees grayscale here)",
            "budget": asdict(b), "classifier": clf.describe(), "probes": probes, "inversion": inversion,
            "interpolation": interp, "threads": torch.get_num_threads(), "device": str(vae.device),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "frames": frames}


def pm(mean: float, sd: float) -> str:
    """'0.912 ± 0.004'."""
    return f"{mean:.3f} ± {sd:.3f}"


def markdown(result: dict, base: Path | None = None) -> str:
    """representations.md: the probe table, the inversion round trip, the interpolation numbers and the time of
    each phase; the runs' paths relative to `base`, the folder the Markdown is written to (default: the current
    directory)."""
    b = result["budget"]
    lines = ["# How each model represents digits", "",
             f"VAE {shown_path(result['vae'], base)} against DDPM {shown_path(result['ddpm'], base)} "
             f"({get_dataset(result['dataset']).title}). Probes: fitted on {b['train']} of {b['pool']} training "
             f"images per seed (seeds {', '.join(map(str, result['probes'][0]['seeds']))}; ± is the spread), scored "
             f"on {b['test']} test images; linear probe = logistic regression (L-BFGS, 100 iterations), k-NN k=5.",
             "", *md_table(["model", "representation", "t", "block", "features", "linear probe", "k-NN", "silhouette"],
                           [[r["model"], r["representation"], "-" if r["t"] is None else str(r["t"]),
                             r["block"] or "-", str(r["features"]), pm(r["linear_probe"], r["linear_probe_spread"]),
                             pm(r["knn"], r["knn_spread"]), f"{r['silhouette']:.3f}"] for r in result["probes"]])]
    lines += ["", "DDIM inversion, x0 -> x_T -> x0 with S steps each way (RMSE in [0, 1] intensity units):", "",
              *md_table(["S", "images", "RMSE", "max abs", "std of x_T", "invert ms/image", "decode ms/image"],
                        [[str(r["steps"]), str(r["images"]), f"{r['rmse']:.4f}", f"{r['max_abs']:.3f}",
                          f"{r['x_T_std']:.3f}", f"{r['invert_ms_per_image']:.1f}", f"{r['decode_ms_per_image']:.1f}"]
                         for r in result["inversion"]])]
    lines += ["", f"Interpolation, {b['pairs']} pairs of test digits of different classes, {b['frames']} frames "
              f"(DDPM: DDIM-{b['steps']} inversion and decoding, eta 0), in the reference classifier's features:", "",
              *md_table(["method", "path length (1 = straight)", "largest jump", "mean confidence", "min confidence",
                         "frames of neither class"],
                        [[m, f"{v['path_length']:.3f}", f"{v['largest_jump']:.3f}", f"{v['mean_confidence']:.3f}",
                          f"{v['min_confidence']:.3f}", f"{v['off_class_share']:.3f}"]
                         for m, v in result["interpolation"].items()])]
    lines += ["", *timing_lines(result["seconds"], result["threads"], result["device"])]
    return "\n".join(lines) + "\n"


def probe_figure(result: dict, path: Path) -> Path:
    """Linear-probe accuracy against t, one line per UNet block, the VAE's mu (and z) as horizontal lines."""
    fig, ax = plots.plt.subplots(figsize=(7, 4.5))
    ddpm = [r for r in result["probes"] if r["model"] == "DDPM"]
    for block in dict.fromkeys(r["block"] for r in ddpm):
        pts = sorted((r["t"], r["linear_probe"], r["linear_probe_spread"]) for r in ddpm if r["block"] == block)
        t, acc, sd = map(np.array, zip(*pts))
        ax.errorbar(t, acc, yerr=sd, marker="o", capsize=2, label=f"DDPM {block}")
    for r, style in zip((r for r in result["probes"] if r["model"] == "VAE"), ("-", ":")):
        ax.axhline(r["linear_probe"], color="k", linestyle=style, label=f"VAE {r['representation']}")
    ax.set_xscale("log" if min(r["t"] for r in ddpm) > 0 else "symlog")
    ax.set_xlabel("diffusion step t of the noised input (0-based)")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title("Linear probe accuracy by representation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return plots.save(fig, path)


def interpolation_figure(frames: dict[str, torch.Tensor], path: Path) -> Path:
    """The same pairs, one row each: VAE rows (lerp, slerp) above DDPM rows."""
    rows, labels = [], []
    for method, f in frames.items():
        for k, pair in enumerate(f):
            rows.append(pair.numpy()[:, 0])
            labels.append(f"{method}, pair {k + 1}")
    cols = rows[0].shape[0]
    return plots.image_grid(np.concatenate(rows), len(rows), cols, "Interpolation between test digits", path,
                            row_labels=labels, cell=0.8)


def write(result: dict, out: Path) -> list[Path]:
    """representations.json, representations.md and the two figures in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if k != "frames"}
    atomic_write_text(out / JSON, json.dumps(data, indent=1) + "\n")
    atomic_write_text(out / "representations.md", markdown(data, out))
    return [out / "representations.json", out / "representations.md", probe_figure(data, out / "probes.png"),
            interpolation_figure(result["frames"], out / "interpolation.png")]


def read(folder: Path) -> dict | None:
    """The representations.json in `folder`, or None where there is none (or it is unreadable, with a note)."""
    path = Path(folder) / JSON
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        markdown(result)  # every key the renderer needs is there
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError, VaelabError) as e:
        print(f"note: {path} is not readable representations ({type(e).__name__}: {e}); left out", file=sys.stderr)
        return None
    return result
