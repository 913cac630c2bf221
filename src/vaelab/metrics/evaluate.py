"""Measured, not eyeballed: a trained run -> metrics.json, on the dataset the run was trained on.

A VAE is scored on likelihood (likelihood.py), sample quality of decoded z ~ N(0, I) (quality.py),
class structure of its latents (latent.py) and the latent's regularity: prior holes, KL and MMD to N(0, I)
(structure.py); a DDPM on the sample quality of its DDIM-50 samples and its variational bound on -log p(x) of the
8-bit test images (diffusion/likelihood.py). Every likelihood number names its protocol. EVALUATORS maps a
run's kind to how it is opened and scored. Every number is stored with the settings that produced it
(images, k, N, data variant, dataset, classifier).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from vaelab.data.images import Data, Images, images_for, to_signed, to_unit
from vaelab.diffusion.likelihood import VARIANCES, image_bounds
from vaelab.diffusion.sample import eps_model, generate
from vaelab.diffusion.run import DDPMRun, open_ddpm
from vaelab.engine.lock import run_lock
from vaelab.engine.runs import METRICS_FORMAT, read_kind, write_metrics
from vaelab.errors import RunError
from vaelab.metrics import quality
from vaelab.metrics.classifier import ReferenceClassifier
from vaelab.metrics.latent import latent_probes
from vaelab.metrics.likelihood import (EIGHT_BIT, PROTOCOL_NOTES, data_variant, fast_copy, iwae_log_px, likelihood,
                                       summary)
from vaelab.metrics.reference import resolve
from vaelab.metrics.structure import latent_structure
from vaelab.vae.sample import encode_logvar, vae_samples
from vaelab.nn import count_parameters
from vaelab.vae.run import VAERun, open_vae
from vaelab.vae.loss import protocol
from vaelab.vae.train import test_images

FORMAT = METRICS_FORMAT
DDPM_SAMPLER, DDPM_STEPS = "ddim", 50  # a DDPM's evaluation samples: the fast sampler
STRUCTURE_SEED = 3  # latent structure draws from seed + 3 (samples use seed + 2, IWAE seed + 1)
BOUND_SEED = 4  # the DDPM bound's noise and steps draw from seed + 4



@dataclass(frozen=True)
class Settings:
    """How much work an evaluation does; saved in metrics.json next to the numbers."""

    test_images: int = 10000  # -ELBO, KL per dim, active units, probes' test side
    iwae_k: int = 100  # importance samples per image
    iwae_images: int = 2000  # first test images scored by IWAE (k decodes each): standard error ~0.5 nat
    n_samples: int = 10000  # generated images for sample quality
    n_ref: int = 10000  # reference test images for sample quality
    probe_train: int = 60000  # training images the k-NN and linear probes are fitted on
    knn_k: int = 5
    seed: int = 0
    max_decodes: int = 4096  # decoder batch of the IWAE loop: bounds memory whatever k is
    bound_images: int = 1000  # first test images of the DDPM's bound: (bound_k + 1) network evaluations each
    bound_k: int = 10  # sampled steps t per image of the DDPM's bound (stratified); 0: exact, all T steps


DEFAULT = Settings()
QUICK = Settings(test_images=2000, iwae_k=10, iwae_images=200, n_samples=1000, n_ref=1000, probe_train=5000,
                 bound_images=200, bound_k=5)


def settings_with(base: Settings, **overrides) -> Settings:
    """`base` with the given fields replaced (None values ignored)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def describe(run: VAERun) -> str:
    """A short label: 'conv 32-64-128, latent 10, beta 1, 2 epochs'."""
    m, t = run.cfg.model, run.cfg.train
    epochs = run.history[-1]["epoch"] if run.history else 0
    return f"{m.family} {m.arch}, latent {m.latent_dim}, beta {t.beta:g}, {epochs} epoch{'s' if epochs != 1 else ''}"


def stamp() -> str:
    """The creation time metrics.json records."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def evaluate_vae(run: VAERun, data: Images, s: Settings = DEFAULT, clf: ReferenceClassifier | None = None,
                 log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Every metric of a VAE run under settings `s`, on its dataset's images `data`; the dict of metrics.json."""
    binarize, px = run.cfg.train.binarize, run.cfg.train.likelihood
    proto = protocol(px, binarize)
    variant, variant_note = data_variant(binarize, data.dataset)
    model, seconds, t_all = run.model.eval(), {}, time.perf_counter()
    fast = fast_copy(model)

    t0 = time.perf_counter()
    # binarise the whole test set, then slice: the draw of image i does not depend on how many are used
    x_test = test_images(data.test_x.to(run.device), binarize)[:s.test_images]
    lik, mu_test, neg_elbo = likelihood(fast, x_test, s.seed, px=px)
    lik.update(protocol=proto, protocol_note=PROTOCOL_NOTES[proto], likelihood=px,
               neg_elbo_summary=summary(neg_elbo, proto))
    seconds["likelihood"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_iw = min(s.iwae_images, len(x_test))
    log(f"IWAE bound, k = {s.iwae_k}, on {n_iw} test images")
    log_px = iwae_log_px(fast, x_test[:n_iw], s.iwae_k, s.seed + 1, s.max_decodes, progress=True, px=px)
    lik["iwae"] = {"k": s.iwae_k, "images": n_iw, "which": f"first {n_iw} test images",
                   "neg_log_likelihood": float(-log_px.mean()),
                   "neg_elbo_same_images": float(neg_elbo[:n_iw].mean()), "summary": summary(-log_px, proto)}
    seconds["iwae"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"sample quality of {s.n_samples} decoded z ~ N(0, I)")
    images = vae_samples(fast, s.n_samples, s.seed + 2)
    clf = clf or resolve(data, run.device)  # what sample_quality would resolve; structure below uses it too
    sq = quality.sample_quality(images, data, run.device, s.n_ref, clf=clf, seed=s.seed)  # seed: the bootstrap's
    sq["samples"] = "pixel means sigmoid(decoder(z)), z ~ N(0, I)"
    seconds["sample_quality"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"latent probes on {min(s.probe_train, len(data.train_x))} training images")
    probes = latent_probes(fast, data, mu_test, s.probe_train, s.knn_k, binarize)
    seconds["latent"] = time.perf_counter() - t0

    t0 = time.perf_counter()  # last, and from its own generator: the numbers above are as before
    log(f"latent structure: prior holes of {s.n_samples} decoded z ~ N(0, I), KL and MMD against N(0, I), "
        "interpolation smoothness")
    structure = latent_structure(lambda z: fast.decode(z.to(run.device)), fast.latent_dim, mu_test, encode_logvar(fast, x_test),
                                 to_unit(data.test_x[:len(x_test)]), clf, s.n_samples, s.seed + STRUCTURE_SEED,
                                 labels=data.test_y[:len(x_test)])
    seconds["latent_structure"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all

    return {"format": FORMAT, "kind": "vae", "run": str(run.path), "model": describe(run),
            "dataset": data.dataset.name, "data_variant": variant, "data_note": variant_note, "settings": asdict(s),
            "likelihood": lik, "sample_quality": sq, "latent": probes,
            "latent_structure": structure,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "threads": torch.get_num_threads(),
            "created": stamp()}


def ddpm_likelihood(run: DDPMRun, data: Images, s: Settings = DEFAULT, variance: str = VARIANCES[0]) -> dict:
    """The DDPM's variational bound on -log p(x) of the first s.bound_images 8-bit test images (protocol
    discretized-8bit), estimated from s.bound_k stratified steps per image (0: exact), with its interval."""
    t0 = time.perf_counter()
    x0 = to_signed(data.test_x[:s.bound_images].to(run.device))
    f = eps_model(run.model, run.device, amp=False)  # float32: small t weigh |eps - eps_hat|^2 by about 1/beta~_t
    values = image_bounds(f, run.schedule, x0, s.bound_k or None, s.seed + BOUND_SEED, variance)
    T = run.schedule.T
    how = (f"exact: all {T} terms, {T} network evaluations per image" if not s.bound_k else
           f"unbiased estimate: prior and L_0 exact, {s.bound_k} of the {T - 1} steps t >= 1 drawn one per equal "
           f"stratum and weighted by its size; {s.bound_k + 1} network evaluations per image")
    return {**summary(values, EIGHT_BIT), "protocol_note": PROTOCOL_NOTES[EIGHT_BIT],
            "which": f"first {len(values)} test images", "k": s.bound_k or None, "steps": T, "estimator": how,
            "reverse_variance": variance, "decoder": "discretized Gaussian, mean x0_hat at t = 0, variance beta~_1",
            "weights": "EMA" if run.ema else "raw", "seconds": round(time.perf_counter() - t0, 1)}


def evaluate_ddpm(run: DDPMRun, data: Images, s: Settings = DEFAULT, clf: ReferenceClassifier | None = None,
                  log=lambda m: print(m, file=sys.stderr)) -> dict:
    """metrics.json of a DDPM run: sample quality of s.n_samples DDIM-50 images (the fast sampler) and the
    variational bound on -log p(x) of s.bound_images 8-bit test images."""
    log(f"variational bound of {min(s.bound_images, len(data.test_x))} test images, "
        f"{f'{s.bound_k} sampled steps' if s.bound_k else 'all steps'} each")
    lik = ddpm_likelihood(run, data, s)
    log(f"sample quality of {s.n_samples} DDIM-{DDPM_STEPS} samples")
    t0 = time.perf_counter()
    images, speed = generate(run, s.n_samples, DDPM_SAMPLER, DDPM_STEPS, seed=s.seed)
    sq = quality.sample_quality(images, data, run.device, s.n_ref, clf=clf, seed=s.seed)
    sq["samples"] = f"DDIM-{DDPM_STEPS} (eta 0) with the {'EMA' if run.ema else 'raw'} weights, {speed:.1f} images/s"
    return {"format": FORMAT, "kind": "ddpm", "run": str(run.path),
            "model": f"DDPM, {count_parameters(run.model):,} parameters, {len(run.history)} epochs",
            "dataset": data.dataset.name, "data_variant": "grayscale",
            "data_note": f"grayscale {data.dataset.title} scaled to [-1, 1] for the diffusion",
            "settings": {"n_samples": s.n_samples, "n_ref": s.n_ref, "sampler": DDPM_SAMPLER, "steps": DDPM_STEPS,
                         "seed": s.seed, "bound_images": s.bound_images, "bound_k": s.bound_k},
            "likelihood": lik, "sample_quality": sq,
            "seconds": {"likelihood": lik["seconds"], "total": round(time.perf_counter() - t0 + lik["seconds"], 1)},
            "created": stamp()}


@dataclass(frozen=True)
class Evaluator:
    """How `vaelab evaluate` handles one kind of run: open(path, device) -> run; score(run, data, s, clf, log)."""

    open: Callable
    score: Callable


# run kind -> its evaluator; the opened run has .cfg.dataset (the dataset it was trained on) and .device
EVALUATORS = {"vae": Evaluator(open_vae, evaluate_vae), "ddpm": Evaluator(open_ddpm, evaluate_ddpm)}


def evaluate_path(path, s: Settings = DEFAULT, device: str = "auto", data_dir=None,
                  clf: ReferenceClassifier | None = None, data: Data = None,
                  log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Evaluate the run in `path` on its own dataset, write its metrics.json, return the metrics."""
    # data: the run's dataset as Images, or a loader (name -> Images); None: load(name, data_dir)
    path = Path(path)
    kind = read_kind(path)
    if kind not in EVALUATORS:
        raise RunError(f"{path} holds a {kind} run, which `vaelab evaluate` cannot score yet")
    evaluator = EVALUATORS[kind]
    with run_lock(path):  # no training may change the weights while they are measured
        run = evaluator.open(path, device)
        metrics = evaluator.score(run, images_for(run.cfg.dataset, data, data_dir), s, clf, log)
        write_metrics(path, metrics)
    return metrics
