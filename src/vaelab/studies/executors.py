"""Executors: where the jobs of a sweep (or of `vaelab reproduce`) run, behind one small protocol.

The caller prepares run folders (each holds its config.json) and describes the work on them as a `Job`;
it never builds a command line, starts a process or names a machine. An `Executor` runs jobs:

    executor.slots: int                    how many jobs it runs at once: keep at most that many in flight
    executor.submit(job) -> handle         start (or queue) the job and return at once; the handle is opaque
    executor.poll(handle) -> JobResult | None
                                           never blocks: None while the job runs, its JobResult once it ended
    executor.cancel(handle) -> None        stop the job and wait until it has stopped; its run folders stay
                                           resumable (a trainer saves its last epoch); a no-op once it ended
    str(executor)                          a few words for logs, e.g. "2 job(s), 1 thread(s) each"

A job's own failure (a diverged run, a bad option, a missing file) is a JobResult with a non-zero code, not
an exception: one failed job never stops the others. submit, poll and cancel raise only when the executor
itself breaks, or on KeyboardInterrupt (the caller then cancels what is in flight).

Job kinds (every path in `runs` is a run folder; see `Job`):
    "train"           one run, resumed from its last checkpoint if it has one
    "train_together"  two or more runs whose configs differ only in beta, as one stacked model
    "evaluate"        one trained run -> metrics.json; options: quick, k, samples, iwae_images, probe_train
    "ddpm_train"      one DDPM run folder, created if missing; options: profile, resume

`LocalExecutor` runs each job as a fresh `python -m vaelab.cli ...` process on this machine; it is the only
place where a Job becomes a command line. `RayExecutor` (studies/ray_executor.py) implements the same four
members with each job a Ray task that runs that same command, through `run_job`, on a node that sees the run
folders; its JobResults say how many attempts a job took (Ray retries a task whose worker died).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

KINDS = ("train", "train_together", "evaluate", "ddpm_train")


@dataclass(frozen=True)
class Job:
    """Work on prepared run folders: what to do (kind, options), to which runs, with which data and log.

    threads: CPU threads for the job (None: the executor's share); log: a file the job's output is
    appended to (None: wherever the executor's own output goes)."""

    kind: str
    runs: tuple[Path, ...]
    options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    threads: int | None = None
    log: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "runs", tuple(Path(r) for r in self.runs))
        object.__setattr__(self, "options", dict(self.options))
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r} (known: {', '.join(KINDS)})")
        wanted = "two or more runs" if self.kind == "train_together" else "one run"
        if (len(self.runs) < 2) if self.kind == "train_together" else (len(self.runs) != 1):
            raise ValueError(f"a {self.kind} job takes {wanted} (got {len(self.runs)})")


@dataclass(frozen=True)
class JobResult:
    """How a job ended: code 0 is success; reason says it for people (default 'exit N'); attempts: how many
    times the executor started it (more than 1: it was retried after its worker died)."""

    code: int
    reason: str = ""
    attempts: int = 1

    def __post_init__(self):
        if not self.reason:
            object.__setattr__(self, "reason", "ok" if self.code == 0 else f"exit {self.code}")

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.code == 0


@runtime_checkable
class Executor(Protocol):
    """Runs Jobs; see the module docstring for the contract of each member."""

    slots: int

    def submit(self, job: Job) -> Any:
        """Start (or queue) `job` and return an opaque handle at once."""
        ...

    def poll(self, handle: Any) -> JobResult | None:
        """None while the job runs, its JobResult once it has ended; never blocks."""
        ...

    def cancel(self, handle: Any) -> None:
        """Stop the job and wait until it has stopped (a no-op once it has ended)."""
        ...


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Each of `jobs` processes gets an equal share of the cores (never oversubscribe)."""
    return max(1, cpu_cores() // jobs)


def flags(options: dict[str, Any]) -> list[str]:
    """CLI flags of job options: {"iwae_images": 100, "quick": True} -> ["--iwae-images", "100", "--quick"]."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) or value is None:
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    return out


@dataclass
class LocalHandle:
    """A LocalExecutor job: its process and the log file it writes to."""

    job: Job
    proc: subprocess.Popen
    log: IO | None = None

    def close(self) -> None:
        """Close the log file (idempotent)."""
        if self.log is not None:
            self.log.close()
            self.log = None


class LocalExecutor:
    """Each job a fresh `python -m vaelab.cli ...` process on this machine, `jobs` at a time, the cores shared."""

    def __init__(self, jobs: int = 1, threads: int | None = None, python: str = sys.executable):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1 (got {jobs})")
        self.slots = jobs
        self.threads = threads or threads_per_job(jobs)
        self.python = python
        self.pass_fds: tuple[int, ...] = ()  # descriptors the job's process inherits (the Ray task's run locks)

    def __str__(self) -> str:
        return f"{self.slots} job(s), {self.threads} thread(s) each"

    def argv(self, job: Job) -> list[str]:
        """The `vaelab` command line that does `job`."""
        runs = [str(r) for r in job.runs]
        head = {"train": ["train", "--out", runs[0], "--resume"],
                "train_together": ["train-together", *runs],
                "evaluate": ["evaluate", runs[0]],
                "ddpm_train": ["ddpm", "train", "--out", runs[0]]}[job.kind]
        data = ["--data-dir", str(job.data_dir)] if job.data_dir else []
        return [self.python, "-m", "vaelab.cli", *head, *flags(job.options), *data]

    def submit(self, job: Job) -> LocalHandle:
        """Start the job's process, its output appended to job.log; VAELAB_THREADS is its share of the cores."""
        env = {**os.environ, "VAELAB_THREADS": str(job.threads or self.threads), "PYTHONUNBUFFERED": "1"}
        log = open(job.log, "a") if job.log is not None else None
        try:
            proc = subprocess.Popen(self.argv(job), env=env, stdout=log, pass_fds=self.pass_fds,
                                    stderr=subprocess.STDOUT if log is not None else None,
                                    preexec_fn=partial(die_with_parent, os.getpid()))
        except BaseException:
            if log is not None:
                log.close()
            raise
        return LocalHandle(job, proc, log)

    def poll(self, handle: LocalHandle) -> JobResult | None:
        """None while the process runs, else its exit code as a JobResult."""
        code = handle.proc.poll()
        if code is None:
            return None
        handle.close()
        return JobResult(code)

    def cancel(self, handle: LocalHandle) -> None:
        """SIGTERM (the child saves its last epoch and exits), then wait for it."""
        handle.proc.terminate()  # a no-op on a process already reaped
        handle.proc.wait()
        handle.close()


def die_with_parent(parent: int) -> None:
    """In a job's process before it starts: SIGTERM it when the sweep (pid `parent`) dies, however it dies
    (PR_SET_PDEATHSIG, Linux; elsewhere nothing), so that it saves its last epoch and exits instead of training
    on as an orphan."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # the sweep died before prctl: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def run_job(executor: Executor, job: Job, every: float = 0.2) -> JobResult:
    """Submit one job and wait for its result; Ctrl-C cancels it."""
    handle = executor.submit(job)
    try:
        while (result := executor.poll(handle)) is None:
            time.sleep(every)
    except BaseException:
        executor.cancel(handle)
        raise
    return result
