"""The Python API (`import vaelab`): train, load, evaluate and score from a notebook, with the CLI's run folders.

    >>> import vaelab
    >>> vae = vaelab.train(model="conv", latent_dim=2, epochs=1, out="runs/nb")   # a run folder, as the CLI writes
    >>> vae = vaelab.load("runs/nb")                                             # VAEModel (or DDPMModel)
    >>> x = vae.sample(25, seed=0)                                               # (25, 1, 28, 28) in [0, 1]

The CLI calls these functions; they never print a figure and never parse arguments.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from functools import partial
from pathlib import Path
from typing import Callable

from vaelab.config import from_dict, with_overrides
from vaelab.data.images import load as load_images
from vaelab.diffusion.config import DDPMConfig, auto_profile, profile_config
from vaelab.diffusion.run import open_ddpm
from vaelab.diffusion.train import train_ddpm as train_ddpm_run
from vaelab.engine import distributed, tblog
from vaelab.engine.distributed import World
from vaelab.engine.lock import HELD_ENV, locked_env, run_lock
from vaelab.engine.runs import pick_device, plan_run, prepare_run, read_kind, with_train
from vaelab.errors import RanksFailed, RunError, VaelabError
from vaelab.handles import DDPMModel, VAEModel, as_images
from vaelab.metrics.evaluate import DEFAULT, QUICK, evaluate_path
from vaelab.metrics.reference import own
from vaelab.metrics.score import score_images
from vaelab.vae.config import VAEConfig
from vaelab.vae.archs import REPORT_CHOICE
from vaelab.vae.run import open_vae
from vaelab.vae.train import train_vae

# keyword of vaelab.train -> dotted key of VAEConfig
TRAIN_OPTIONS = {"dataset": "dataset", "model": "model.family", "arch": "model.arch", "latent_dim": "model.latent_dim",
                 "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr", "beta": "train.beta",
                 "seed": "train.seed", "device": "train.device", "binarize": "train.binarize",
                 "precision": "train.precision", "likelihood": "train.likelihood",
                 "on_divergence": "train.on_divergence", "divergence_factor": "train.divergence_factor"}
RESUME_CHANGES = ("on_divergence", "divergence_factor")  # train fields a resume may change, besides epochs
OPENERS = {"vae": lambda path, device: VAEModel(open_vae(path, device)),
           "ddpm": lambda path, device: DDPMModel(open_ddpm(path, device))}


def load(path, device: str = "auto") -> VAEModel | DDPMModel:
    """Open a trained run folder: a VAEModel or a DDPMModel, by what its config.json says it holds."""
    kind = read_kind(Path(path))
    if kind not in OPENERS:
        raise RunError(f"{path} holds a {kind} run, which vaelab cannot open")
    return OPENERS[kind](Path(path), device)


def vae_config(config=None, **options) -> VAEConfig:
    """A validated VAEConfig: `config` (a VAEConfig or its dict) or the report's choice, with keyword options."""
    unknown = set(options) - set(TRAIN_OPTIONS)
    if unknown:
        raise VaelabError(f"unknown option(s) {', '.join(sorted(unknown))}; vaelab.train takes "
                          f"{', '.join(TRAIN_OPTIONS)}")
    if config is None:
        family = options.get("model", "conv")
        if family not in REPORT_CHOICE:
            raise VaelabError(f"model must be one of {', '.join(REPORT_CHOICE)} (got {family!r})")
        arch, latent = REPORT_CHOICE[family]
        config = VAEConfig(model=dataclasses.replace(VAEConfig().model, family=family, arch=arch, latent_dim=latent))
    elif isinstance(config, dict):
        config = from_dict(VAEConfig, config)
    overrides = {TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    return with_overrides(config, overrides).validate()


def ddpm_config(config=None, profile: str = "auto", overrides: dict | None = None) -> DDPMConfig:
    """A validated DDPMConfig: `config` (a DDPMConfig or its dict) or a profile ('auto': full on CUDA, else cpu),
    with dotted overrides ({"train.epochs": 1})."""
    overrides = overrides or {}
    if config is not None:
        cfg = config if isinstance(config, DDPMConfig) else from_dict(DDPMConfig, config)
        return with_overrides(cfg, overrides).validate()
    if profile == "auto":
        profile = auto_profile(pick_device(overrides.get("train.device") or "auto").type == "cuda")
    return profile_config(profile, overrides)


def vae_banner(cfg: VAEConfig, data, out: Path, device, world: World) -> str:
    """The line `vaelab train` starts with."""
    return (f"training {cfg.model.family} {cfg.model.arch}, latent {cfg.model.latent_dim}, beta {cfg.train.beta:g} "
            f"on {data.dataset.title} for {cfg.train.epochs} epochs into {out}")


def ddpm_banner(cfg: DDPMConfig, data, out: Path, device, world: World) -> str:
    """The line `vaelab ddpm train` starts with."""
    ranks = f" x {world.size} processes (DDP)" if world.size > 1 else ""
    return (f"training DDPM ({cfg.profile} profile): UNet {cfg.model.widths}, {cfg.schedule.kind} schedule "
            f"T={cfg.schedule.timesteps}, {data.dataset.title}, {cfg.train.epochs} epochs on {device}{ranks} into {out}")


@dataclasses.dataclass(frozen=True)
class Trainer:
    """How a model family is trained: its config class, its train function and its opening line."""

    config: type
    train: Callable[..., list[dict]]
    banner: Callable[..., str]


TRAINERS = {"vae": Trainer(VAEConfig, train_vae, vae_banner),
            "ddpm": Trainer(DDPMConfig, partial(train_ddpm_run, samples=True), ddpm_banner)}


def fit_run(kind: str, out, cfg=None, epochs: int | None = None, dataset: str | None = None, data_dir=None,
            tensorboard: bool = False, nproc: int = 1, log=lambda m: print(m, file=sys.stderr),
            changes: dict | None = None) -> tuple[object, list]:
    """Start (cfg given) or resume (cfg None) the run folder `out` of family `kind` and train it; (config,
    history). The one way to train, for the API and the CLI: alone, as one rank under torchrun, or (nproc > 1)
    as nproc DDP processes started here, each resuming the folder prepared here (history then []). A resume
    may change `epochs` and the train fields in `changes` (on_divergence, divergence_factor)."""
    if tensorboard:
        tblog.require()  # before any work: say how to install it
    out, trainer, new = Path(out), TRAINERS[kind], cfg is not None
    if changes and cfg is not None:
        cfg = with_train(cfg, **changes)
    cfg, started = plan_run(out, kind, trainer.config, cfg, epochs, dataset, changes)
    if nproc > 1:  # mistakes of the launch are caught before the lock creates the folder
        if distributed.launched():
            raise VaelabError("--nproc starts the processes itself; under torchrun, leave it out")
        distributed.check_gpus(pick_device(cfg.train.device), nproc)
    # one writer per run folder: this process, or (under torchrun) rank 0 for all the ranks
    with run_lock(*([out] if distributed.from_env().is_main else [])):
        if nproc > 1:
            return cfg, launch_ranks(out, cfg, new, started, nproc, data_dir, tensorboard)
        return cfg, train_here(out, trainer, cfg, new, started, data_dir, tensorboard, log)


def train_here(out: Path, trainer: Trainer, cfg, new: bool, started: bool, data_dir, tensorboard: bool,
               log) -> list:
    """Train the planned run in this process (alone, or as one rank under torchrun); its history."""
    with distributed.joined(pick_device(cfg.train.device)) as (world, device):
        data = prepare_run(out, cfg, new, started, data_dir, world)
        if world.is_main:
            log(trainer.banner(cfg, data, out, device, world))
        return trainer.train(out, cfg, data, resume=started, tensorboard=tensorboard, world=world, device=device)


def launch_ranks(out: Path, cfg, new: bool, started: bool, nproc: int, data_dir, tensorboard: bool) -> list:
    """Prepare the run folder here (every mistake is caught before a process starts; fit_run checked the
    launch), then train it as nproc DDP processes on this machine, as torchrun --standalone would, each
    continuing the folder."""
    prepare_run(out, cfg, new, started, data_dir)
    worker = ["-m", "vaelab.cli", cfg.kind, "train", "--out", str(out), "--resume"]
    worker += ["--data-dir", str(data_dir)] if data_dir else []
    worker += ["--tensorboard"] if tensorboard else []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    before = os.environ.get(HELD_ENV)
    os.environ.update(locked_env([out]))  # the ranks inherit it: they train under this process's lock
    try:
        code = distributed.launch(nproc, worker, threads=max(1, cores // nproc))
    finally:  # later child processes of this one (a notebook's) must not believe they hold it
        if before is None:
            os.environ.pop(HELD_ENV)
        else:
            os.environ[HELD_ENV] = before
    if code:
        raise RanksFailed(code)
    return []


def train(config=None, out="runs/vae", resume: bool = False, data_dir=None, tensorboard: bool = False,
          **options) -> VAEModel:
    """Train a VAE into the run folder `out` (as `vaelab train`) and return it opened.

    config: a VAEConfig, its dict (config.json), or None for the report's choice of `model` ('conv' or 'dense');
    options: dataset, model, arch, latent_dim, epochs, batch_size, lr, beta, seed, device, binarize, precision,
    likelihood ('bernoulli', 'binarized', 'discretized_logistic'), on_divergence ('stop', 'rollback'),
    divergence_factor (default 3; 0: off).
    resume=True continues the run in `out` (options then may only give `epochs`, a new target, and the two
    divergence options);
    tensorboard=True also writes TensorBoard logs into `out`/tb.
    """
    if resume:
        extra = set(options) - {"epochs", "dataset", *RESUME_CHANGES}
        if extra or config is not None:
            raise VaelabError(f"a resumed run keeps its config; only epochs, on_divergence and divergence_factor "
                              f"may change (got {sorted(extra)})")
        fit_run("vae", out, None, options.get("epochs"), options.get("dataset"), data_dir, tensorboard,
                changes={k: options[k] for k in RESUME_CHANGES if k in options})
    else:
        fit_run("vae", out, vae_config(config, **options), data_dir=data_dir, tensorboard=tensorboard)
    return load(out)


def train_ddpm(config=None, out="runs/ddpm", profile: str = "auto", resume: bool = False, data_dir=None,
               tensorboard: bool = False, **overrides) -> DDPMModel:
    """Train a DDPM into `out` (as `vaelab ddpm train`: the same run folder, samples.png after each epoch) and
    return it opened.

    config: a DDPMConfig or its dict, else `profile` ('full', 'quick', 'cpu', or 'auto': full on CUDA, cpu on a CPU);
    overrides: dotted config keys with '__' for '.', e.g. train__epochs=1, model__widths="8-16-32-64".
    """
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    if resume:
        fit_run("ddpm", out, None, dotted.get("train.epochs"), data_dir=data_dir, tensorboard=tensorboard,
                changes={k: dotted[f"train.{k}"] for k in RESUME_CHANGES if f"train.{k}" in dotted})
    else:
        fit_run("ddpm", out, ddpm_config(config, profile, dotted), data_dir=data_dir, tensorboard=tensorboard)
    return load(out)


def evaluate(path, quick: bool = False, device: str = "auto", classifier=None, data_dir=None) -> dict:
    """Measure a run (as `vaelab evaluate`): writes its metrics.json and returns it."""
    clf = own(classifier) if classifier is not None else None
    return evaluate_path(path, QUICK if quick else DEFAULT, device, data_dir=data_dir, clf=clf)


def score(images, dataset: str = "mnist", n_ref: int = 10000, classifier=None, resamples: int = 200,
          seed: int = 0, device: str = "auto", data_dir=None) -> dict:
    """Sample quality of any images (N, 1, 28, 28) in [0, 1] (as `vaelab score`), with the pinned classifier."""
    data = load_images(dataset, data_dir)
    dev = pick_device(device)
    clf = own(classifier, dev, data.dataset) if classifier is not None else None
    return score_images(as_images(images), data, dev, n_ref, clf, resamples, seed)

