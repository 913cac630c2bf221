"""RayExecutor: the jobs of a sweep as Ray tasks, on a Ray cluster or on a local Ray started here.

Each Job (one run to train or evaluate, or a beta group trained stacked) is one Ray task that asks for
`cpus_per_run` CPUs and `gpus_per_run` GPUs (a fraction lets several runs share a GPU). The task does on its
node exactly what LocalExecutor does here, through the same `run_job`: a fresh `python -m vaelab.cli ...`
process with VAELAB_THREADS = cpus_per_run, so a task resumes a partial run from its last checkpoint and
run folders stay the unit of truth. They must be on a filesystem every node sees, at the same absolute path.

Faults. A task whose worker dies (killed process, lost node) is retried by Ray (`max_retries`); the
vaelab process of the dead worker dies with it (PR_SET_PDEATHSIG, Linux), and each task holds an flock on
its run folders that its vaelab process inherits: a stale process keeps the lock until it exits, so a retry
(or a rerun after the driver was killed) waits for it instead of training beside it.
Every attempt appends a line to RUN/.ray-attempts (submission token, node id, worker pid): a JobResult
with attempts > 1 says the job was retried. cancel() is ray.cancel: the task gets KeyboardInterrupt,
SIGTERMs its vaelab process, which saves its last epoch, and the run folder stays resumable.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError
from vaelab.studies.executors import Job, JobResult, LocalExecutor, cpu_cores, run_job

INSTALL = "pip install 'vaelab[ray]'"
ATTEMPTS = ".ray-attempts"  # per run folder: the lock file, and one line per attempt of a task on it
MAX_RETRIES = 3  # Ray retries a task this many times after its worker died
LOCK_WAIT = 300.0  # seconds a task waits for a stale process to let go of its run folder
CANCEL_WAIT = 60.0  # seconds a cancelled task gets to stop its vaelab process before it is killed
SLOTS_EVERY = 5.0  # seconds between two looks at the cluster's size (nodes may join or leave)

# `python -c CHILD PARENT_PID ENV_JSON COMMAND...`: die with the Ray worker that started us (a worker killed
# with SIGKILL cannot stop its children; its retry must not meet them still writing the run folder), then
# become COMMAND with ENV added to the environment.
CHILD = """import ctypes, json, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux only
except AttributeError:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.execve(sys.argv[3], sys.argv[3:], {**os.environ, **json.loads(sys.argv[2])})
"""


def import_ray():
    """The ray module, or a VaelabError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise VaelabError(f"--executor ray needs Ray, an optional extra: {INSTALL}") from None
    return ray


class TaskExecutor(LocalExecutor):
    """LocalExecutor inside a Ray task: its process dies with the worker and gets the driver's environment."""

    def __init__(self, threads: int, env: dict[str, str], locks: tuple[int, ...] = ()):
        super().__init__(jobs=1, threads=threads)
        self.env = env
        self.pass_fds = locks  # the vaelab process holds the run locks too: they outlive a killed worker

    def argv(self, job: Job) -> list[str]:
        """The local command line, behind CHILD."""
        return [self.python, "-c", CHILD, str(os.getpid()), json.dumps(self.env), *super().argv(job)]


def lock_runs(job: Job, stack: ExitStack, wait: float = LOCK_WAIT) -> tuple[Path, tuple[int, ...]]:
    """Hold an flock on the .ray-attempts file of each run of `job` (sorted, so two tasks never deadlock);
    the attempts file and the locked descriptors (for the job's process to inherit)."""
    fds = []
    for run in sorted(job.runs):
        fd = os.open(run / ATTEMPTS, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        stack.callback(os.close, fd)
        fds.append(fd)
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > wait:
                    raise VaelabError(f"{run} is still used by another process after {wait:.0f} s") from None
                time.sleep(0.5)
            except OSError:  # a filesystem without locks: go on unguarded (the driver's lock still holds)
                break
    return job.runs[0] / ATTEMPTS, tuple(fds)


def attempts(path: Path, token: str) -> int:
    """How many attempts of the submission `token` the file at `path` records."""
    try:
        return sum(line.split()[:1] == [token] for line in path.read_text().splitlines())
    except OSError:
        return 0


def attempt(job: Job, threads: int, env: dict[str, str], token: str) -> tuple[int, str, int]:
    """The body of a Ray task: run `job` as LocalExecutor would, on this node; (code, reason, attempts)."""
    missing = [str(r) for r in job.runs if not r.is_dir()]
    if missing:
        return 2, (f"not visible on node {socket.gethostname()}: {', '.join(missing)} (--out must be on a "
                   "filesystem every node sees)"), 1
    with ExitStack() as stack:
        try:
            record, locks = lock_runs(job, stack)
        except VaelabError as e:
            return 4, str(e), 1
        node = import_ray().get_runtime_context().get_node_id()
        with open(record, "a") as f:  # its line comes before the work: a worker killed now still counts
            f.write(f"{token} {node} {os.getpid()} {time.time():.0f}\n")
        result = run_job(TaskExecutor(threads, env, locks), job, every=0.1)
        return result.code, result.reason, attempts(record, token)


def forwarded_env(gpus: float) -> dict[str, str]:
    """The driver's VAELAB_* settings for every run; no GPU for a run that asked for none."""
    env = {k: v for k, v in os.environ.items() if k.startswith("VAELAB_") and k != "VAELAB_THREADS"}
    if gpus == 0:  # Ray leaves CUDA_VISIBLE_DEVICES alone for a task without GPUs: hide them ourselves
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@dataclass
class RayHandle:
    """A RayExecutor job: its task and the token its attempts are recorded under."""

    job: Job
    ref: Any
    token: str
    result: JobResult | None = None


class RayExecutor:
    """Each job a Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs; see the module docstring.

    address: None starts a local Ray with this machine's cores ('auto' or HOST:PORT joins a cluster); when
    this process is already connected to Ray, that connection is used. A context manager: leaving it stops
    the local Ray it started."""

    def __init__(self, address: str | None = None, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
                 max_retries: int = MAX_RETRIES, num_cpus: int | None = None):
        if cpus_per_run < 1 or gpus_per_run < 0:
            raise VaelabError(f"cpus per run must be >= 1 and GPUs per run >= 0 "
                              f"(got {cpus_per_run}, {gpus_per_run})")
        self.ray = import_ray()
        self.cpus, self.gpus, self.max_retries = cpus_per_run, gpus_per_run, max_retries
        self.cuda = gpus_per_run > 0  # --together auto: stack beta groups when runs get GPUs
        self.started = connect(self.ray, address, num_cpus)
        self.where = address or "a local Ray"
        self.task = self.ray.remote(  # SPREAD: a sweep's runs over every node, not packed on the first
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries, retry_exceptions=False,
            scheduling_strategy="SPREAD")(attempt)
        self._slots, self._seen = 1, -SLOTS_EVERY
        try:
            check_fits(self.ray, cpus_per_run, gpus_per_run)
        except VaelabError:
            self.close()
            raise

    def __str__(self) -> str:
        total = self.ray.cluster_resources()
        gpus = f", {total.get('GPU', 0):g} GPU(s)" if total.get("GPU") else ""
        return (f"Ray, {self.where}: {len(alive_nodes(self.ray))} node(s), {total.get('CPU', 0):g} CPU(s){gpus}; "
                f"{self.cpus} CPU(s), {self.gpus:g} GPU per run, up to {self.max_retries} retries")

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Stop the local Ray this executor started (a no-op when it joined one)."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    @property
    def slots(self) -> int:
        """Runs the cluster holds at once with the resources each asks for (looked at again every few seconds)."""
        if time.monotonic() - self._seen > SLOTS_EVERY:
            total = self.ray.cluster_resources()
            fits = [int(total.get("CPU", 0) / self.cpus + 1e-9)]
            if self.gpus:
                fits.append(int(total.get("GPU", 0) / self.gpus + 1e-9))
            self._slots, self._seen = max(1, min(fits)), time.monotonic()
        return self._slots

    def submit(self, job: Job) -> RayHandle:
        """Start the job's task; its run folders must be absolute paths (every node resolves them alike)."""
        relative = [str(r) for r in job.runs if not r.is_absolute()]
        if relative:
            raise VaelabError(f"the Ray executor needs absolute run folders (got {', '.join(relative)})")
        for run in job.runs:  # a DDPM run folder may not exist yet; the task checks that its node sees it
            run.mkdir(parents=True, exist_ok=True)
        if job.data_dir is not None:  # a relative one would be read from the worker's working directory
            job = dataclasses.replace(job, data_dir=os.path.abspath(job.data_dir))
        token = uuid.uuid4().hex[:12]
        task = self.task.options(name=f"vaelab {job.kind} {job.runs[0].name}")
        ref = task.remote(job, job.threads or self.cpus, forwarded_env(self.gpus), token)
        return RayHandle(job, ref, token)

    def poll(self, handle: RayHandle) -> JobResult | None:
        """None while the task runs (or waits for resources), else how it ended."""
        if handle.result is None:
            ready, _ = self.ray.wait([handle.ref], timeout=0)
            if ready:
                handle.result = self.outcome(handle)
        return handle.result

    def outcome(self, handle: RayHandle) -> JobResult:
        """The JobResult of an ended task; a task Ray gave up on (worker died every time) is a failure."""
        try:
            code, reason, n = self.ray.get(handle.ref)
            return JobResult(code, reason, attempts=n)
        except self.ray.exceptions.TaskCancelledError:
            return JobResult(130, "cancelled")
        except self.ray.exceptions.RayError as e:
            n = attempts(handle.job.runs[0] / ATTEMPTS, handle.token)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            return JobResult(1, f"Ray gave up after {n} attempt(s): {type(e).__name__}: {first}", attempts=n)

    def cancel(self, handle: RayHandle) -> None:
        """ray.cancel: the task SIGTERMs its vaelab process (the last epoch is saved); wait until it ended."""
        if handle.result is not None:
            return
        self.ray.cancel(handle.ref)
        ready, _ = self.ray.wait([handle.ref], timeout=CANCEL_WAIT)
        if not ready:  # stuck: kill the worker; its vaelab process dies with it, the checkpoint is crash-safe
            self.ray.cancel(handle.ref, force=True)
            self.ray.wait([handle.ref], timeout=CANCEL_WAIT)
        handle.result = JobResult(130, "cancelled")


def connect(ray, address: str | None, num_cpus: int | None) -> bool:
    """Connect to Ray (`address`) or start a local one; True when this call started Ray here."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus or cpu_cores(), include_dashboard=False, logging_level="WARNING")
            return True
        ray.init(address=address, logging_level="WARNING")
        return False
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        auth = "" if address is None or os.environ.get("RAY_AUTH_MODE") else \
            "; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here"
        raise VaelabError(f"cannot connect to Ray at {address or 'this machine'}: {first} (start a cluster with "
                          f"`ray start --head`, or leave out --ray-address for a local Ray{auth})") from None


def check_reachable(address: str | None, seconds: float = 5.0) -> None:
    """A HOST:PORT that answers no TCP connection is refused at once (ray.init would retry for minutes)."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in address:  # None, 'auto', ray://...: Ray's own look-up
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise VaelabError(f"cannot connect to Ray at {address}: {e.strerror or e} (is `ray start --head` running "
                          "there? its port is 6379 unless --port said otherwise)") from None


def alive_nodes(ray) -> list[dict]:
    """The cluster's nodes that are up."""
    return [n for n in ray.nodes() if n.get("Alive")]


def check_fits(ray, cpus: int, gpus: float) -> None:
    """Refuse resources no node has: such tasks would wait forever."""
    if not any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus
               for n in alive_nodes(ray)):
        have = ", ".join(f"{n['Resources'].get('CPU', 0):g} CPU/{n['Resources'].get('GPU', 0):g} GPU"
                         for n in alive_nodes(ray))
        raise VaelabError(f"no node of the Ray cluster has {cpus} CPU(s) and {gpus:g} GPU(s) for a run "
                          f"(nodes: {have}); lower --cpus-per-run / --gpus-per-run")

