"""`vaelab reproduce` (run the report's studies and write the report) and `vaelab report` (write it again)
(arguments: args/report.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from vaelab.cli.sweep import open_executor
from vaelab.data.images import load
from vaelab.config import load_json
from vaelab.diffusion.config import DDPMConfig, auto_profile
from vaelab.data.registry import DEFAULT as DEFAULT_DATASET
from vaelab.engine.runs import CONFIG, pick_device, prepare_new, write_config
from vaelab.studies import represent
from vaelab.errors import VaelabError
from vaelab.studies.executors import Executor, Job, LocalExecutor, run_job
from vaelab.studies.report import build, export
from vaelab.studies.sweep import is_done, load_spec, run_sweep
from vaelab.studies.versus import compare, write
from vaelab.vae.config import VAEConfig, VAETrainConfig

# profile -> study -> (config overrides, evaluation options, replicate seeds); args/report.py names the profiles.
# quick's beta study runs 3 seeds, so the report shows a spread and verdicts can say "no winner".
PROFILES = {
    "quick": {"dense": ({"train.epochs": 2}, {"quick": True}, 1),
              "conv": ({"train.epochs": 2}, {"quick": True}, 1),
              "beta": ({"train.epochs": 3}, {"quick": True}, 3)},
    "full": {"dense": ({"train.epochs": 10}, {}, 1), "conv": ({"train.epochs": 10}, {}, 1),
             "beta": ({"train.epochs": 10}, {}, 3)},
}
NOTES = {"quick": "Profile quick: 2 epochs (dense, conv) and 3 epochs (beta, {beta_seeds}) instead of 10, and the "
                  "quick evaluation (2,000 test images for -ELBO, 1,000 samples for FD-LeNet): rankings, not final "
                  "numbers.",
         "full": "Profile full: the report's 10 epochs and the default evaluation; the beta study with {beta_seeds}."}
# the DDPM profile each reproduction profile trains by default: quick's own, or (full) the annex's on a GPU and
# the cpu profile without one (the annex's 40 epochs are meant for a GPU)
DDPM_PROFILE = {"quick": "quick", "full": "auto"}


def profile_note(profile: str, seeds: int | None) -> str:
    """The report's sentence on the profile, with the beta study's actual number of seeds."""
    n = seeds or PROFILES[profile]["beta"][2]
    return NOTES[profile].format(beta_seeds=f"{n} seed{'s' if n != 1 else ''}")


def cmd_reproduce(args) -> int:
    """Run the dense, conv and beta studies under --out, then write REPORT.md and report.html."""
    out, t0 = Path(args.out), time.perf_counter()
    studies = args.studies or [*PROFILES[args.profile], "ddpm"]
    with open_executor(args, out) as executor:
        failed = run_studies(args, out, studies, executor)
    print("== report", file=sys.stderr)
    md, page = build(out, loader(args.data_dir), profile_note(args.profile, args.seeds))
    minutes = (time.perf_counter() - t0) / 60
    print(f"report: {page}\n        {md}\n({minutes:.1f} minutes)")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run_studies(args, out: Path, studies: list[str], executor: Executor | None) -> list[str]:
    """Each study's sweep under out/STUDY, then the DDPM and its comparison; the failed runs' names."""
    failed = []
    for study in [s for s in studies if s != "ddpm"]:
        overrides, evaluate, seeds = PROFILES[args.profile][study]
        seeds = args.seeds or seeds
        if args.dataset is not None:
            overrides = {**overrides, "dataset": args.dataset}
        spec = load_spec(study)
        if seeds > 1:
            spec = dataclasses.replace(spec, grid={**spec.grid, "train.seed": list(range(seeds))})
        print(f"== study {study} ({args.profile})", file=sys.stderr)
        summary = run_sweep(spec, out / study, args.jobs, args.data_dir, evaluate, overrides, together=args.together,
                            executor=executor)
        failed += [f"{study}/{s['run']}" for s in summary if s["status"].startswith("failed")]
        retried = [f"{study}/{s['run']} ({s['retries']}x)" for s in summary if s.get("retries")]
        if retried:
            print(f"{len(retried)} run(s) retried after their worker died: {', '.join(retried)}", file=sys.stderr)
    if "ddpm" in studies:
        ddpm_profile = resolve_ddpm_profile(args.ddpm_profile or DDPM_PROFILE[args.profile], args)
        failed += ddpm_versus(out, ddpm_profile, args.data_dir, executor=executor, dataset=args.dataset,
                              versus_n=args.versus_n, vae_epochs=PROFILES[args.profile]["conv"][0]["train.epochs"])
    return failed


# images per generator in the VAE-vs-DDPM comparison, by the DDPM's profile: DDPM-1000 is slow on a CPU, where the
# quick and cpu profiles train, so they compare on fewer images (timings: docs/performance.md)
VERSUS_N = {"quick": 500, "cpu": 500, "full": 5000}


def resolve_ddpm_profile(name: str, args) -> str:
    """'auto' as the DDPM profile that will train: full where the runs get a CUDA GPU, else the cpu one."""
    ray_gpus = getattr(args, "executor", "local") == "ray" and (args.gpus_per_run or 0) > 0  # the driver may have none
    return name if name != "auto" else auto_profile(ray_gpus or pick_device("auto").type == "cuda")


LIKELIHOOD_VAE = "vae-8bit"  # the discretized-likelihood conv VAE of the likelihood table, under DIR/ddpm
REPRESENT = "represent"  # the folder of `vaelab represent`'s files under DIR/ddpm


def best_vae(out: Path) -> Path | None:
    """The evaluated VAE run of the studies with the lowest FD-LeNet (the comparison's 'best VAE')."""
    scored = []
    for metrics in out.glob("*/*/metrics.json"):
        sq = json.loads(metrics.read_text()).get("sample_quality", {})
        if metrics.parent.parent.name != "ddpm" and "fd_lenet" in sq:
            scored.append((sq["fd_lenet"], metrics.parent))
    return min(scored)[1] if scored else None


def loader(data_dir):
    """name -> that dataset's Images, from --data-dir (for a report whose runs say which dataset they used)."""
    return lambda name: load(name, data_dir)


def likelihood_vae(out: Path, epochs: int, data_dir, executor: Executor | None, dataset: str | None) -> Path | None:
    """The report's conv VAE with the discretized likelihood (the likelihood table's 8-bit footing), trained for
    `epochs` as a job of `executor`, resumably; None if it failed."""
    run = out / "ddpm" / LIKELIHOOD_VAE
    if is_done(run, evaluate=False):
        return run
    if not (run / CONFIG).exists():
        cfg = VAEConfig(dataset=dataset or DEFAULT_DATASET,
                        train=VAETrainConfig(epochs=epochs, likelihood="discretized_logistic")).validate()
        prepare_new(run)
        write_config(run, cfg)
    print("== VAE with the discretized likelihood", file=sys.stderr)
    job = Job("train", (run,), {}, data_dir=data_dir)
    return run if run_job(executor if executor is not None else LocalExecutor(jobs=1), job).ok else None


def ddpm_versus(out: Path, profile: str, data_dir, executor: Executor | None = None,
                dataset: str | None = None, versus_n: int | None = None, vae_epochs: int = 10) -> list[str]:
    """Train the DDPM of `profile` (resumably, as a job of `executor`) and compare it with the best VAE on
    versus_n images each (default: by the profile the run was trained with), its likelihood with a discretized
    conv VAE's; failures as names."""
    run = out / "ddpm" / "run"
    if not is_done(run, evaluate=False):
        print("== DDPM", file=sys.stderr)
        options = {"profile": profile, "resume": (run / "config.json").exists()}
        if dataset is not None and not options["resume"]:
            options["dataset"] = dataset
        job = Job("ddpm_train", (run,), options, data_dir=data_dir)
        if not run_job(executor if executor is not None else LocalExecutor(jobs=1), job).ok:
            return ["ddpm/run"]
    vae = best_vae(out)
    if vae is None:
        return ["ddpm/comparison (no evaluated VAE)"]
    lik_vae = likelihood_vae(out, vae_epochs, data_dir, executor, dataset)
    if lik_vae is None:
        return [f"ddpm/{LIKELIHOOD_VAE}"]
    if not (out / "ddpm" / "comparison.json").exists():
        print("== versus", file=sys.stderr)
        trained = load_json(run / CONFIG, DDPMConfig).profile  # a resumed run's own, not the one asked for now
        n = versus_n or VERSUS_N.get(trained, VERSUS_N["full"])
        write(compare(vae, run, loader(data_dir), n, log=lambda m: print(m, file=sys.stderr),
                      likelihood_vae=lik_vae), out / "ddpm")
    if not (out / "ddpm" / REPRESENT / represent.JSON).exists():  # how each represents digits (issue: section 5)
        print("== representations", file=sys.stderr)
        represent.write(represent.measure(vae, run, loader(data_dir), represent.DEFAULT), out / "ddpm" / REPRESENT)
    return []


def cmd_report(args) -> int:
    """Rewrite the report of a reproduction folder from its saved results."""
    out = Path(args.dir)
    if args.export:
        copied = export(out, Path(args.export), html_page=args.html)
        size = sum(p.stat().st_size for p in copied)
        print(f"copied REPORT.md and {len(copied) - 1} other file(s) ({size / 1e6:.2f} MB) into {args.export}")
        return 0
    if not any((out / s).is_dir() for s in ("dense", "conv", "beta")):
        raise VaelabError(f"{out} holds no study folder (dense, conv or beta); run `vaelab reproduce` first")
    md, page = build(out, None if args.no_figures else loader(args.data_dir), args.note or "")
    print(f"report: {page}\n        {md}")
    return 0
