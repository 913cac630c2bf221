"""The Python API (`import vaelab`): train, load, evaluate and score from a notebook, with the CLI's run folders.

    >>> import vaelab
    >>> vae = vaelab.train(model="conv", latent_dim=2, epochs=1, out="runs/nb")   # a run folder, as the CLI writes
    >>> vae = vaelab.load("runs/nb")                                             # VAEModel (or DDPMModel)
    >>> x = vae.sample(25, seed=0)                                               # (25, 1, 28, 28) in [0, 1]

The CLI calls these functions; they never print a figure and never parse arguments.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from vaelab.config import from_dict, load_json, with_overrides
from vaelab.data.images import load as load_images
from vaelab.data.registry import dataset_for_run
from vaelab.diffusion.config import DDPMConfig, auto_profile, extend, profile_config
from vaelab.diffusion.figures import progress_grid
from vaelab.diffusion.train import build_schedule, open_ddpm, train_ddpm as train_ddpm_run
from vaelab.engine import tblog
from vaelab.engine.runs import CONFIG, pick_device, prepare_new, read_kind, write_config
from vaelab.errors import RunError, VaelabError
from vaelab.handles import DDPMModel, VAEModel, as_images
from vaelab.metrics.evaluate import DEFAULT, QUICK, evaluate_path
from vaelab.metrics.reference import own
from vaelab.metrics.score import score_images
from vaelab.vae.config import VAEConfig
from vaelab.vae.networks import REPORT_CHOICE
from vaelab.vae.run import open_vae
from vaelab.vae.train import train_vae

# keyword of vaelab.train -> dotted key of VAEConfig
TRAIN_OPTIONS = {"dataset": "dataset", "model": "model.family", "arch": "model.arch", "latent_dim": "model.latent_dim",
                 "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr", "beta": "train.beta",
                 "seed": "train.seed", "device": "train.device", "binarize": "train.binarize",
                 "precision": "train.precision"}
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


def train_run(out: Path, cfg: VAEConfig | None, data_dir=None, resume: bool = False, epochs: int | None = None,
              dataset: str | None = None, log=lambda m: print(m, file=sys.stderr),
              tensorboard: bool = False) -> tuple[VAEConfig, list[dict]]:
    """Create (cfg) or resume (cfg None) the VAE run folder `out` and train it; (config, history)."""
    if tensorboard:
        tblog.require()  # before any work: say how to install it
    if resume:
        if not (out / CONFIG).exists():
            raise RunError(f"{out} holds no run to resume (no {CONFIG})")
        cfg = load_json(out / CONFIG, VAEConfig)
        dataset_for_run(cfg.dataset, dataset)
        if epochs is not None and epochs != cfg.train.epochs:  # extending (or shortening) a run
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs)).validate()
            write_config(out, cfg)
        resume = (out / "state.pt").exists()
    else:
        prepare_new(out)
    data = load_images(cfg.dataset, data_dir)
    if not resume:
        write_config(out, cfg, {"data_source": str(data.source)})
    log(f"training {cfg.model.family} {cfg.model.arch}, latent {cfg.model.latent_dim}, beta {cfg.train.beta:g} "
        f"on {data.dataset.title} for {cfg.train.epochs} epochs into {out}")
    return cfg, train_vae(out, cfg, data, resume=resume, tensorboard=tensorboard)


def train(config=None, out="runs/vae", resume: bool = False, data_dir=None, tensorboard: bool = False,
          **options) -> VAEModel:
    """Train a VAE into the run folder `out` (as `vaelab train`) and return it opened.

    config: a VAEConfig, its dict (config.json), or None for the report's choice of `model` ('conv' or 'dense');
    options: dataset, model, arch, latent_dim, epochs, batch_size, lr, beta, seed, device, binarize, precision.
    resume=True continues the run in `out` (options then may only give `epochs`, a new target);
    tensorboard=True also writes TensorBoard logs into `out`/tb.
    """
    out = Path(out)
    if resume:
        extra = set(options) - {"epochs", "dataset"}
        if extra or config is not None:
            raise VaelabError(f"a resumed run keeps its config; only epochs may change (got {sorted(extra)})")
        train_run(out, None, data_dir, True, options.get("epochs"), options.get("dataset"), tensorboard=tensorboard)
    else:
        train_run(out, vae_config(config, **options), data_dir, tensorboard=tensorboard)
    return load(out)


def train_ddpm(config=None, out="runs/ddpm", profile: str = "auto", resume: bool = False, data_dir=None,
               tensorboard: bool = False, **overrides) -> DDPMModel:
    """Train a DDPM into `out` (as `vaelab ddpm train`: the same run folder, samples.png after each epoch) and
    return it opened.

    config: a DDPMConfig or its dict, else `profile` ('full', 'quick', 'cpu', or 'auto': full on CUDA, cpu on a CPU);
    overrides: dotted config keys with '__' for '.', e.g. train__epochs=1, model__widths="8-16-32-64".
    """
    if tensorboard:
        tblog.require()  # before any work: say how to install it
    out = Path(out)
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    if resume:
        if read_kind(out) != "ddpm":
            raise RunError(f"{out} holds no DDPM run to resume")
        cfg = load_json(out / CONFIG, DDPMConfig)
        if "train.epochs" in dotted and dotted["train.epochs"] != cfg.train.epochs:
            cfg = extend(cfg, dotted["train.epochs"])
            write_config(out, cfg)
        resume = (out / "state.pt").exists()
    else:
        if config is not None:
            cfg = config if isinstance(config, DDPMConfig) else from_dict(DDPMConfig, config)
            cfg = with_overrides(cfg, dotted).validate()
        else:
            if profile == "auto":
                profile = auto_profile(pick_device(dotted.get("train.device", "auto")).type == "cuda")
            cfg = profile_config(profile, dotted)
        prepare_new(out)
    data = load_images(cfg.dataset, data_dir)
    if not resume:
        write_config(out, cfg, {"data_source": str(data.source)})
    device = pick_device(cfg.train.device)
    schedule = build_schedule(cfg).to(device)
    on_epoch = lambda epoch, model: progress_grid(out, epoch, model, schedule, device, amp=cfg.train.amp)  # noqa: E731
    train_ddpm_run(out, cfg, data, resume=resume, on_epoch=on_epoch, device=device, tensorboard=tensorboard)
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

