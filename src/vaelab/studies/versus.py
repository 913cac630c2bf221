"""VAE against DDPM, as the report's conclusion proposes: the same sample-quality metrics, sampling speed,
size and training time, side by side, plus a DDPM evaluator for `vaelab evaluate`.

Every generator is scored by quality.sample_quality on N images against the same test images, so FD-LeNet
values compare only at equal N (the table states N).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from vaelab import plots
from vaelab.metrics import quality
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.data.images import MNIST
from vaelab.vae.models import count_parameters

# name -> (sampler, steps, eta): the DDPM's ways of sampling compared here. DDIM with eta = 0 is the
# deterministic sampler; eta = 1 adds DDPM-like noise at each of its 50 steps. On the 3-epoch quick
# DDPM, N = 500, seeds 0/1: FD-LeNet DDPM-1000 124.8; DDIM-50 eta 0 161.1/151.5; eta 1 118.6/127.3.
DDPM_SAMPLERS = {"DDPM-1000": ("ddpm", None, None), "DDIM-100": ("ddim", 100, 0.0), "DDIM-50": ("ddim", 50, 0.0),
                 "DDIM-50-eta1": ("ddim", 50, 1.0)}


@torch.no_grad()
def vae_generate(run, n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """n VAE samples (pixel means of decoded z ~ N(0, I)) in [0, 1] on the CPU, and images per second."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, run.cfg.model.latent_dim, generator=g)
    t0 = time.perf_counter()
    x = torch.cat([run.model.decode(z[i:i + 1000].to(run.device)).cpu() for i in range(0, n, 1000)])
    return x, n / (time.perf_counter() - t0)


def train_seconds(history: list[dict]) -> float | None:
    """Total training seconds recorded in a run's history."""
    return history[-1].get("seconds") if history else None


def score(name: str, images: torch.Tensor, speed: float, mnist: MNIST, clf, device) -> dict:
    """Sample-quality numbers of one generator, with its speed."""
    sq = quality.sample_quality(images, mnist, device, n_ref=len(mnist.test_x), clf=clf, with_anchors=False)
    keep = ("fd_lenet", "precision", "recall", "classifier_score", "class_entropy", "rarest_class_share")
    return {"generator": name, "n": len(images), "images_per_second": speed,
            "ms_per_image": 1000.0 / speed, **{k: sq[k] for k in keep}}


def compare(vae_dir: Path, ddpm_dir: Path, mnist: MNIST, n: int = 1000, samplers=tuple(DDPM_SAMPLERS),
            device: str = "auto", seed: int = 0, log=print) -> dict:
    """Score the VAE and each DDPM sampler on n images; returns the comparison (also the samples shown)."""
    from vaelab.metrics.classifier import load_or_train
    from vaelab.diffusion.figures import generate
    from vaelab.diffusion.train import open_ddpm
    from vaelab.engine.runs import open_vae

    vae, ddpm = open_vae(vae_dir, device), open_ddpm(ddpm_dir, device)
    clf = load_or_train(mnist, vae.device)
    rows, shown = [], {}
    images, speed = vae_generate(vae, n, seed)
    rows.append(score("VAE", images, speed, mnist, clf, vae.device))
    shown["VAE"] = images[:16]
    for name in samplers:
        sampler, steps, eta = DDPM_SAMPLERS[name]
        log(f"sampling {n} images with {name}")
        images, speed = generate(ddpm, n, sampler, steps, eta=eta, seed=seed)
        rows.append(score(name, images, speed, mnist, clf, ddpm.device))
        shown[name] = images[:16]
    return {"n": n, "device": str(vae.device), "threads": torch.get_num_threads(),
            "hardware": torch.cuda.get_device_name() if vae.device.type == "cuda" else "CPU",
            "vae": {"run": str(vae_dir), "parameters": count_parameters(vae.model),
                    "train_seconds": train_seconds(vae.history), "epochs": len(vae.history)},
            "ddpm": {"run": str(ddpm_dir), "parameters": count_parameters(ddpm.model),
                     "train_seconds": train_seconds(ddpm.history), "epochs": len(ddpm.history)},
            "rows": rows, "shown": shown}


def markdown(result: dict) -> str:
    """The comparison as a Markdown table (with the hardware it ran on)."""
    v, d = result["vae"], result["ddpm"]
    lines = [f"VAE {v['run']} ({v['parameters']:,} parameters, {v['epochs']} epochs, {v['train_seconds'] or 0:.0f} s "
             f"of training) against DDPM {d['run']} ({d['parameters']:,} parameters, {d['epochs']} epochs, "
             f"{d['train_seconds'] or 0:.0f} s). N = {result['n']} images each against the 10,000 test images; "
             f"{result['hardware']}, {result['threads']} thread(s).", "",
             "| generator | ms per image | images/s | FD-LeNet | precision | recall | classifier score | "
             "class entropy | rarest class share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['generator']} | {r['ms_per_image']:.2f} | {r['images_per_second']:.1f} | "
                     f"{r['fd_lenet']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['classifier_score']:.2f} | "
                     f"{r['class_entropy']:.3f} | {r['rarest_class_share']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> Path:
    """Samples side by side: one row of 16 per generator."""
    names = list(result["shown"])
    images = np.concatenate([result["shown"][k].numpy()[:, 0] for k in names])
    return plots.image_grid(images, len(names), 16, "VAE and DDPM samples, side by side", path,
                            row_labels=names, cell=0.7)


def write(result: dict, out: Path) -> tuple[Path, Path, Path]:
    """comparison.json, comparison.md and comparison.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if k != "shown"}
    atomic_write_text(out / "comparison.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", markdown(result))
    return out / "comparison.json", out / "comparison.md", figure(result, out / "comparison.png")


def evaluate_ddpm(path: Path, mnist: MNIST, s, device: str = "auto", clf=None) -> dict:
    """metrics.json of a DDPM run: sample quality of s.n_samples DDIM-50 images (the fast sampler)."""
    from vaelab.diffusion.figures import generate
    from vaelab.diffusion.train import open_ddpm

    run = open_ddpm(path, device)
    images, speed = generate(run, s.n_samples, "ddim", 50, seed=s.seed)
    sq = quality.sample_quality(images, mnist, run.device, s.n_ref, clf=clf)
    sq["samples"] = f"DDIM-50 (eta 0) with the EMA weights, {speed:.1f} images/s"
    return {"format": "vaelab-metrics-1", "kind": "ddpm", "run": str(path),
            "model": f"DDPM, {count_parameters(run.model):,} parameters, {len(run.history)} epochs",
            "data_variant": "grayscale", "data_note": "grayscale MNIST scaled to [-1, 1] for the diffusion",
            "settings": {"n_samples": s.n_samples, "n_ref": s.n_ref, "sampler": "ddim", "steps": 50, "seed": s.seed},
            "sample_quality": sq, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
