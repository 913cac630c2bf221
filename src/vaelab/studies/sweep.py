"""Sweeps: a TOML grid over config keys -> one run folder per configuration, trained and evaluated.

Resumable by construction: each run folder is a normal run (config.json first, a checkpoint every
epoch, metrics.json when evaluated), so running the same sweep again skips finished runs and
resumes partial ones. The runner prepares the run folders and hands the work on them to an executor
(studies/executors.py) as jobs: train (or train several runs together), then evaluate, run by run. By
default each job is its own process on this machine (`--jobs N` splits the CPU threads between N of
them), so a crash or a NaN in one run never stops the others. Spec parsing lives in studies/spec.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab.config import load_json, to_dict
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.engine.runs import write_config
from vaelab.errors import VaelabError
from vaelab.studies.executors import Executor, Job, JobResult, LocalExecutor
from vaelab.studies.spec import Spec, builtin_specs, configs, load_spec, parse_spec, run_name
from vaelab.vae.config import VAEConfig

__all__ = ["Spec", "SweepLock", "builtin_specs", "configs", "is_done", "load_spec", "parse_spec", "run_name",
           "run_sweep"]

POLL_SECONDS = 0.2  # pause between two rounds of polls in which no job ended


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


def unit_jobs(out: Path, names: list[str], evaluate: dict | None,
              data_dir: str | None, tensorboard: bool = False) -> list[tuple[Job, str | None]]:
    """(job, the run it belongs to; None: the whole group) that train and then evaluate `names`, in order:
    one run -> a `train` job; several (same config but beta) -> one `train_together` job. Each job's output
    goes to the log.txt of its run (of the group's first run when it trains a group)."""
    log = {n: out / n / "log.txt" for n in names}
    train = {"tensorboard": True} if tensorboard else {}  # each run's TensorBoard logs in RUN/tb
    if len(names) == 1:
        jobs = [(Job("train", (out / names[0],), train, data_dir=data_dir, log=log[names[0]]), names[0])]
    else:
        jobs = [(Job("train_together", tuple(out / n for n in names), train, data_dir=data_dir, log=log[names[0]]),
                 None)]
    if evaluate is not None:
        jobs += [(Job("evaluate", (out / n,), evaluate, data_dir=data_dir, log=log[n]), n) for n in names]
    return jobs


def units(runs: list[tuple[str, VAEConfig]], todo: list[str], together: bool) -> list[list[str]]:
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


def stack_by_default(runs: list[tuple[str, VAEConfig]], cuda: bool | None = None) -> bool:
    """--together auto: stack on CUDA, where it pays (several times); on CPU processes do as well.
    cuda: whether the runs get a GPU (default: whether this machine has one)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return cuda and all(c.train.device in ("auto", "cuda") or c.train.device.startswith("cuda") for _, c in runs)


def prepare(out: Path, runs: list[tuple[str, VAEConfig]]) -> None:
    """Write each run's config.json once; a folder that holds a different config is refused."""
    for name, cfg in runs:
        run_dir = out / name
        if (run_dir / "config.json").exists():
            saved = load_json(run_dir / "config.json", VAEConfig)  # a config written before a field existed
            if saved != cfg:  # compares with that field's default, as every reader of the run does
                raise VaelabError(f"{run_dir} holds a run with another config; use another --out")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)


@dataclass
class Unit:
    """Runs started together (one run, or a beta group trained stacked) and their jobs still to submit."""

    names: list[str]
    todo: list[tuple[Job, str | None]]  # (job, the run it belongs to; None: the whole group)
    t0: float = field(default_factory=time.perf_counter)
    current: tuple[Job, str | None] | None = None
    handle: Any = None
    failed: list[str] = field(default_factory=list)
    retried: bool = False  # its group training failed: its runs were queued again, one by one
    retries: dict[str, int] = field(default_factory=dict)  # run -> times a job of it was restarted (worker died)


class Runner:
    """The loop of one sweep: keeps the executor's slots busy with units, records one status per run."""

    def __init__(self, executor: Executor, queue: list[list[str]], job_list, status: dict, bar, log):
        self.executor, self.queue, self.job_list, self.status = executor, queue, job_list, status
        self.bar, self.log, self.active = bar, log, []

    def start(self, unit: Unit) -> None:
        """Submit the unit's next job."""
        unit.current = unit.todo.pop(0)
        unit.handle = self.executor.submit(unit.current[0])

    def finish(self, unit: Unit, names: list[str], outcome: str) -> None:
        """Record the outcome of `names`, which leave the unit."""
        for name in names:
            seconds = round(time.perf_counter() - unit.t0, 1)
            self.status[name] = {"run": name, "status": outcome, "seconds": seconds}
            retries = unit.retries.get(name, 0)
            if retries:  # the executor restarted a job of this run after its worker died
                self.status[name]["retries"] = retries
            again = f", retried {retries}x after its worker died" if retries else ""
            with tqdm.external_write_mode(file=sys.stderr):  # the line above the bar, not through it
                self.log(f"  {name}: {outcome} ({seconds:.1f} s{again})" +
                         (f"; see {unit.current[0].log}" if outcome != "ok" else ""))
        self.bar.update(len(names))

    def ended(self, unit: Unit, result: JobResult) -> None:
        """The unit's current job ended with `result`: go on with the unit, or close it."""
        job, owner = unit.current
        for name in unit.names if owner is None else [owner]:
            unit.retries[name] = unit.retries.get(name, 0) + result.attempts - 1
        if not result.ok and owner is None:  # the group failed: each run alone, so only a bad one fails
            self.log(f"  training {len(unit.names)} runs together failed ({result.reason}, see {job.log}); "
                     "training them one by one")
            self.queue[:0] = [[n] for n in unit.names]
            unit.retried, unit.todo = True, []
        elif not result.ok:
            unit.failed.append(owner)
            self.finish(unit, [owner], f"failed ({result.reason})")
            unit.todo = [(j, o) for j, o in unit.todo if o != owner]
        if unit.todo:
            self.start(unit)
            return
        self.active.remove(unit)
        if not unit.retried:
            self.finish(unit, [n for n in unit.names if n not in unit.failed], "ok")

    def run(self) -> None:
        """Until every unit has ended; on any exit (Ctrl-C included) cancel the jobs in flight."""
        try:
            while self.queue or self.active:
                while self.queue and len(self.active) < self.executor.slots:
                    names = self.queue.pop(0)
                    unit = Unit(names, self.job_list(names))
                    self.active.append(unit)
                    self.start(unit)
                done = 0
                for unit in list(self.active):
                    result = self.executor.poll(unit.handle)
                    if result is not None:
                        done += 1
                        self.ended(unit, result)
                if not done:
                    time.sleep(POLL_SECONDS)
        finally:  # interrupted: the executor stops each job so that its run folders stay resumable
            for unit in self.active:
                if unit.handle is not None:
                    self.executor.cancel(unit.handle)


def run_sweep(spec: Spec, out: Path, jobs: int = 1, data_dir: str | None = None, evaluate: dict | None = None,
              overrides: dict | None = None, log=lambda m: print(m, file=sys.stderr),
              together: str = "auto", executor: Executor | None = None, tensorboard: bool = False) -> list[dict]:
    """Train (and evaluate) every run of `spec` under `out` through `executor`; one status per run.
    executor: default LocalExecutor(jobs) (`jobs` is used only for that default; an executor keeps its own
    `slots` jobs in flight). evaluate: the `vaelab evaluate` options, None to train only.
    together: 'always' trains runs that differ only in beta as one stacked job, 'auto' on CUDA only.
    tensorboard (or `tensorboard = true` in the spec): TensorBoard logs in every run folder."""
    tensorboard = tensorboard or spec.tensorboard
    executor = executor if executor is not None else LocalExecutor(jobs)
    runs = configs(spec, overrides)
    out.mkdir(parents=True, exist_ok=True)
    with SweepLock(out):
        prepare(out, runs)
        todo = [name for name, _ in runs if not is_done(out / name, evaluate is not None)]
        gpus = getattr(executor, "cuda", None)  # whether the executor's runs get a GPU (None: this machine's)
        stack = together == "always" or (together == "auto" and stack_by_default(runs, gpus))
        status = {name: {"run": name, "status": "done (earlier)", "seconds": 0.0} for name, _ in runs}
        log(f"sweep {spec.name!r}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run "
            f"({executor}{', runs differing only in beta trained together' if stack else ''}) in {out}")
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="sweep", unit="run", disable=None,
                   file=sys.stderr)  # runs done / all of them: a resumed sweep starts where it was
        try:
            Runner(executor, units(runs, todo, stack), lambda names: unit_jobs(out, names, evaluate, data_dir, tensorboard),
                   status, bar, log).run()
        finally:
            bar.close()
            summary = [status[name] for name, _ in runs]
            atomic_write_text(out / "sweep.json", json.dumps({"name": spec.name, "runs": summary}, indent=2) + "\n")
    return summary
