"""Sweeps: a TOML grid over config keys -> one run folder per configuration, trained and evaluated.

Resumable by construction: each run folder is a normal run (config.json first, a checkpoint every
epoch, metrics.json when evaluated), so running the same sweep again skips finished runs and
resumes partial ones. Each run is trained in its own process, so a crash or a NaN in one run never
stops the others, and `--jobs N` splits the CPU threads between N processes.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vaelab.config import RunConfig, to_dict, with_overrides
from vaelab.errors import VaelabError

CORE_KEYS = {"model.family", "model.arch", "model.latent_dim", "train.beta", "train.seed"}  # always in the name
EVALUATE_KEYS = {"quick", "k", "samples", "iwae_images", "probe_train"}
SHORT = {"train.epochs": "ep", "train.lr": "lr", "train.batch_size": "bs"}


@dataclass(frozen=True)
class Spec:
    """A parsed sweep spec: its name, the base overrides, the grid and the evaluation options."""

    name: str
    base: dict
    grid: dict[str, list]
    evaluate: dict


def flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"beta": 1}} -> {"train.beta": 1} (TOML tables and dotted keys read the same)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def builtin_specs() -> dict[str, str]:
    """Names of the built-in specs (the report's studies) -> their TOML text."""
    folder = resources.files("vaelab.studies") / "specs"
    return {p.name[:-5]: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".toml")}


def parse_spec(text: str, origin: str = "spec") -> Spec:
    """Parse and check a TOML sweep spec; every problem is one VaelabError naming `origin`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise VaelabError(f"{origin}: not valid TOML ({e})") from None
    unknown = set(raw) - {"name", "base", "grid", "evaluate"}
    if unknown:
        raise VaelabError(f"{origin}: unknown section(s) {', '.join(sorted(unknown))} "
                          "(allowed: name, base, grid, evaluate)")
    for section in ("base", "grid", "evaluate"):
        if not isinstance(raw.get(section, {}), dict):
            raise VaelabError(f"{origin}: [{section}] must be a table")
    grid = flatten(raw.get("grid", {}))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise VaelabError(f"{origin}: grid key {key!r} must be a non-empty list")
    bad_eval = set(raw.get("evaluate", {})) - EVALUATE_KEYS
    if bad_eval:
        raise VaelabError(f"{origin}: unknown [evaluate] option(s) {', '.join(sorted(bad_eval))} "
                          f"(allowed: {', '.join(sorted(EVALUATE_KEYS))})")
    name = raw.get("name", "sweep")
    if not isinstance(name, str):
        raise VaelabError(f"{origin}: name must be a string")
    spec = Spec(name, flatten(raw.get("base", {})), grid, dict(raw.get("evaluate", {})))
    configs(spec)  # check every combination now, before anything runs
    return spec


def load_spec(arg: str) -> Spec:
    """A spec from a built-in name (dense, conv, beta) or a TOML file path."""
    specs = builtin_specs()
    if arg in specs:
        return parse_spec(specs[arg], f"built-in spec {arg!r}")
    path = Path(arg)
    if not path.is_file():
        raise VaelabError(f"no sweep spec {arg!r}: give a TOML file or one of {', '.join(sorted(specs))}")
    try:
        return parse_spec(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise VaelabError(f"cannot read {path}: {e}") from None


def run_name(cfg: RunConfig, point: dict) -> str:
    """A readable, filesystem-safe folder name, e.g. 'conv-32-64-128_z10_beta1_seed0' (+ other grid keys)."""
    m, t = cfg.model, cfg.train
    parts = [f"{m.family}-{m.arch}", f"z{m.latent_dim}", f"beta{t.beta:g}", f"seed{t.seed}"]
    for key, value in point.items():
        if key not in CORE_KEYS:
            tag = SHORT.get(key, key.split(".")[-1] + "=")
            parts.append(f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
    name = re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts)).strip(".")  # no '/' or '..': stays in --out
    return name[:150] or "run"


def family_defaults(cfg: RunConfig, given: set[str]) -> dict:
    """The report's architecture and latent size for the config's family, where the spec names neither
    (a spec saying only `model.family = "dense"` means the report's dense model, as `vaelab train` does)."""
    from vaelab.vae.models import REPORT_CHOICE

    arch, latent = REPORT_CHOICE.get(cfg.model.family, (cfg.model.arch, cfg.model.latent_dim))
    return {k: v for k, v in (("model.arch", arch), ("model.latent_dim", latent)) if k not in given}


def configs(spec: Spec, overrides: dict | None = None) -> list[tuple[str, RunConfig]]:
    """Every (run name, validated config) of the grid, in a stable order; names are unique."""
    base = with_overrides(RunConfig(), {**spec.base, **(overrides or {})}) if spec.base or overrides else RunConfig()
    keys = list(spec.grid)
    given = {*spec.base, *spec.grid, *(overrides or {})}
    out, seen = [], set()
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        try:
            cfg = with_overrides(base, point)
            cfg = with_overrides(cfg, family_defaults(cfg, given)).validate()
        except VaelabError as e:
            raise VaelabError(f"sweep {spec.name!r}, point {point}: {e}") from None
        name = run_name(cfg, point)
        if name in seen:
            raise VaelabError(f"sweep {spec.name!r}: two grid points map to the folder {name!r}")
        seen.add(name)
        out.append((name, cfg))
    return out


def is_done(run_dir: Path, evaluate: bool) -> bool:
    """A run is done when its last epoch is checkpointed and (if asked) metrics.json exists."""
    try:
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    trained = bool(history) and history[-1].get("epoch") == cfg.get("train", {}).get("epochs")
    return trained and (not evaluate or (run_dir / "metrics.json").exists())


class SweepLock:
    """An exclusive lock on the sweep folder: a second sweep on it is refused, not interleaved."""

    def __init__(self, out: Path):
        self.path = out / ".sweep.lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise VaelabError(f"another sweep is running in {self.path.parent} (lock {self.path}); "
                              "wait for it or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock; the kernel also does it if we are killed
        return False


def evaluate_command(run_dir: Path, evaluate: dict, data: list[str]) -> list[str]:
    """`vaelab evaluate RUN` with the spec's [evaluate] options, as a fresh process."""
    flags = ["--quick"] if evaluate.get("quick") else []
    for key in ("k", "samples", "iwae_images", "probe_train"):  # options of `vaelab evaluate`
        if key in evaluate:
            flags += [f"--{key.replace('_', '-')}", str(evaluate[key])]
    return [sys.executable, "-m", "vaelab.cli", "evaluate", str(run_dir), *flags, *data]


def worker_commands(out: Path, names: list[str], evaluate: dict | None,
                    data_dir: str | None) -> list[tuple[list[str], str | None]]:
    """(command, run it belongs to) that train and then evaluate `names`, each a fresh `vaelab` process:
    one run -> `vaelab train --resume`; several (same config but beta) -> `vaelab train-together`."""
    cli = [sys.executable, "-m", "vaelab.cli"]
    data = ["--data-dir", data_dir] if data_dir else []
    if len(names) == 1:
        cmds = [(cli + ["train", "--out", str(out / names[0]), "--resume", *data], names[0])]
    else:
        cmds = [(cli + ["train-together", *(str(out / n) for n in names), *data], None)]
    if evaluate is not None:
        cmds += [(evaluate_command(out / n, evaluate, data), n) for n in names]
    return cmds


def units(runs: list[tuple[str, RunConfig]], todo: list[str], together: bool) -> list[list[str]]:
    """The runs to start, in order: with `together`, runs whose configs differ only in beta form one unit."""
    if not together:
        return [[name] for name in todo]
    groups: dict[str, list[str]] = {}
    cfgs = dict(runs)
    for name in todo:
        d = to_dict(cfgs[name])
        d["train"].pop("beta")
        groups.setdefault(json.dumps(d, sort_keys=True), []).append(name)
    return list(groups.values())


def stack_by_default(runs: list[tuple[str, RunConfig]]) -> bool:
    """--together auto: stack on CUDA, where it pays (several times); on CPU processes do as well."""
    import torch

    return torch.cuda.is_available() and all(c.train.device in ("auto", "cuda") or c.train.device.startswith("cuda")
                                             for _, c in runs)


def threads_per_job(jobs: int) -> int:
    """Each of `jobs` processes gets an equal share of the cores (never oversubscribe)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // jobs)


def prepare(out: Path, runs: list[tuple[str, RunConfig]]) -> None:
    """Write each run's config.json once; a folder that holds a different config is refused."""
    from vaelab.engine.runs import write_config

    for name, cfg in runs:
        run_dir = out / name
        if (run_dir / "config.json").exists():
            saved = {k: v for k, v in json.loads((run_dir / "config.json").read_text()).items() if k != "meta"}
            if saved != to_dict(cfg):
                raise VaelabError(f"{run_dir} holds a run with another config; use another --out")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)


def run_sweep(spec: Spec, out: Path, jobs: int = 1, data_dir: str | None = None, evaluate: dict | None = None,
              overrides: dict | None = None, log=lambda m: print(m, file=sys.stderr),
              together: str = "auto") -> list[dict]:
    """Train (and evaluate) every run of `spec` under `out`, `jobs` units at a time; one status per run.
    together: 'always' trains runs that differ only in beta in one process (stacked), 'auto' on CUDA only."""
    from tqdm.auto import tqdm

    from vaelab.engine.checkpoint import atomic_write_text

    runs = configs(spec, overrides)
    out.mkdir(parents=True, exist_ok=True)
    with SweepLock(out):
        prepare(out, runs)
        todo = [name for name, _ in runs if not is_done(out / name, evaluate is not None)]
        stack = together == "always" or (together == "auto" and stack_by_default(runs))
        queue = units(runs, todo, stack)
        status = {name: {"run": name, "status": "done (earlier)", "seconds": 0.0} for name, _ in runs}
        log(f"sweep {spec.name!r}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run "
            f"({jobs} job(s), {threads_per_job(jobs)} thread(s) each"
            f"{', runs differing only in beta trained together' if stack else ''}) in {out}")
        env = {**os.environ, "VAELAB_THREADS": str(threads_per_job(jobs)), "PYTHONUNBUFFERED": "1"}
        active: list[dict] = []
        bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=None, file=sys.stderr)

        def start(unit: dict) -> None:
            unit["current"] = unit["cmds"].pop(0)  # (command, the run it belongs to; None: the whole group)
            unit["proc"] = subprocess.Popen(unit["current"][0], stdout=unit["log"], stderr=subprocess.STDOUT, env=env)

        def finish(unit: dict, names: list[str], outcome: str) -> None:
            for name in names:
                status[name] = {"run": name, "status": outcome, "seconds": round(time.perf_counter() - unit["t0"], 1)}
                if outcome != "ok":
                    log(f"  {name}: {outcome}; see {unit['log'].name}")
            bar.update(len(names))

        try:
            while queue or active:
                while queue and len(active) < jobs:
                    names = queue.pop(0)
                    unit = {"names": names, "cmds": worker_commands(out, names, evaluate, data_dir), "retry": False,
                            "t0": time.perf_counter(), "failed": [], "log": open(out / names[0] / "log.txt", "a")}
                    start(unit)
                    active.append(unit)
                for unit in list(active):
                    code = unit["proc"].poll()
                    if code is None:
                        continue
                    owner = unit["current"][1]
                    if code != 0 and owner is None:  # the group failed: each run alone, so only a bad one fails
                        log(f"  training {len(unit['names'])} runs together failed (exit {code}, see "
                            f"{unit['log'].name}); training them one by one")
                        queue[:0] = [[n] for n in unit["names"]]
                        unit["retry"], unit["cmds"] = True, []
                    elif code != 0:
                        unit["failed"].append(owner)
                        finish(unit, [owner], f"failed (exit {code})")
                        unit["cmds"] = [(c, o) for c, o in unit["cmds"] if o != owner]
                    if unit["cmds"]:
                        start(unit)
                        continue
                    unit["log"].close()
                    active.remove(unit)
                    if not unit["retry"]:
                        finish(unit, [n for n in unit["names"] if n not in unit["failed"]], "ok")
                time.sleep(0.2)
        finally:  # interrupted: let children save their last epoch, then stop them
            for unit in active:
                unit["proc"].terminate()
            for unit in active:
                unit["proc"].wait()
                unit["log"].close()
            bar.close()
            summary = [status[name] for name, _ in runs]
            atomic_write_text(out / "sweep.json", json.dumps({"name": spec.name, "runs": summary}, indent=2) + "\n")
    return summary
