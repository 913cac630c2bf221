"""The executor seam: the sweep drives any Executor (here a scripted in-memory one), and LocalExecutor keeps
its end of the contract (commands, environment, log, SIGTERM on cancel)."""

import fcntl
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

import vaelab.studies.sweep as sweep
from vaelab.studies import ray_executor
from vaelab.cli.report import ddpm_versus
from vaelab.errors import VaelabError
from vaelab.studies.executors import Executor, Job, JobResult, LocalExecutor, run_job
from vaelab.studies.sweep import SweepLock, parse_spec, run_sweep

SPEC = """
name = "seam"
[base]
model.family = "dense"
model.arch = "16-32"
train.epochs = 1
train.device = "cpu"
[grid]
"model.latent_dim" = [2]
"train.beta" = [0.5, 2.0, 5.0]
"""
RUNS = ["dense-16-32_z2_beta0.5_seed0", "dense-16-32_z2_beta2_seed0", "dense-16-32_z2_beta5_seed0"]


class FakeExecutor:
    """Records every job and ends each one at its first poll with the code `script(job)` gives.

    polls: scripted answers for the first poll calls, in order (an int: that exit code; None: still running;
    an exception: raised); after them the script decides. No process, no file."""

    def __init__(self, script=lambda job: 0, slots=1, polls=()):
        self.slots, self.script, self.polls = slots, script, list(polls)
        self.jobs, self.running, self.cancelled, self.most_at_once = [], set(), [], 0

    def __str__(self):
        return "fake"

    def submit(self, job):
        self.jobs.append(job)
        handle = len(self.jobs) - 1
        self.running.add(handle)
        self.most_at_once = max(self.most_at_once, len(self.running))
        return handle

    def poll(self, handle):
        answer = self.polls.pop(0) if self.polls else self.script(self.jobs[handle])
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            return None
        self.running.discard(handle)
        return answer if isinstance(answer, JobResult) else JobResult(answer)

    def cancel(self, handle):
        self.cancelled.append(handle)
        self.running.discard(handle)


def steps(executor, out):
    """The submitted jobs as (kind, run names)."""
    return [(j.kind, tuple(str(r.relative_to(out)) for r in j.runs)) for j in executor.jobs]


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)


def test_the_fake_implements_the_protocol():
    assert isinstance(FakeExecutor(), Executor) and isinstance(LocalExecutor(), Executor)


def test_each_run_is_trained_then_evaluated(tmp_path):
    ex = FakeExecutor(slots=1)
    out = tmp_path / "s"
    summary = run_sweep(parse_spec(SPEC), out, data_dir="/data", evaluate={"quick": True, "k": 5},
                        together="never", executor=ex, log=lambda m: None)
    assert steps(ex, out) == [(kind, (run,)) for run in RUNS for kind in ("train", "evaluate")]
    evaluations = [j for j in ex.jobs if j.kind == "evaluate"]
    assert all(j.options == {"quick": True, "k": 5} for j in evaluations)
    assert all(j.data_dir == "/data" and j.log == j.runs[0] / "log.txt" for j in ex.jobs)
    assert all((j.runs[0] / "config.json").exists() for j in ex.jobs)  # jobs get prepared run folders
    assert [s["status"] for s in summary] == ["ok"] * 3
    assert json.loads((out / "sweep.json").read_text())["runs"] == summary


def test_jobs_in_flight_never_exceed_the_executors_slots(tmp_path):
    ex = FakeExecutor(slots=2, polls=[None] * 6)  # the first polls say "still running": the slots fill up
    run_sweep(parse_spec(SPEC), tmp_path / "s", evaluate={}, together="never", executor=ex, log=lambda m: None)
    assert ex.most_at_once == 2 and len(ex.jobs) == 6
    for run in RUNS:  # each run's evaluation comes after its training, whatever the interleaving
        kinds = [j.kind for j in ex.jobs if j.runs == (tmp_path / "s" / run,)]
        assert kinds == ["train", "evaluate"]


def test_a_failed_stacked_group_is_retried_one_run_at_a_time(tmp_path):
    def script(job):  # the stacked job fails, and so does beta 5 alone; the others train fine alone
        return 5 if job.kind == "train_together" or (job.kind == "train" and "beta5" in job.runs[0].name) else 0

    ex, logs, out = FakeExecutor(script, slots=1), [], tmp_path / "s"
    summary = run_sweep(parse_spec(SPEC), out, evaluate={}, together="always", executor=ex, log=logs.append)
    assert steps(ex, out) == [("train_together", tuple(RUNS)),
                              ("train", (RUNS[0],)), ("evaluate", (RUNS[0],)),
                              ("train", (RUNS[1],)), ("evaluate", (RUNS[1],)),
                              ("train", (RUNS[2],))]  # no evaluation of a run whose training failed
    assert [s["status"] for s in summary] == ["ok", "ok", "failed (exit 5)"]
    assert any("3 runs together failed (exit 5" in m for m in logs)


def test_a_stacked_group_that_trains_is_evaluated_run_by_run(tmp_path):
    ex, out = FakeExecutor(slots=1), tmp_path / "s"
    summary = run_sweep(parse_spec(SPEC), out, evaluate={}, together="always", executor=ex, log=lambda m: None)
    assert steps(ex, out) == [("train_together", tuple(RUNS))] + [("evaluate", (r,)) for r in RUNS]
    assert [s["status"] for s in summary] == ["ok"] * 3


def test_a_failed_run_is_reported_while_the_others_finish(tmp_path):
    def script(job):  # beta 2 fails its training; beta 5 fails its evaluation, with the executor's own words
        if job.kind == "train" and "beta2" in job.runs[0].name:
            return 7
        return JobResult(1, "worker lost") if job.kind == "evaluate" and "beta5" in job.runs[0].name else 0

    ex, logs, out = FakeExecutor(script, slots=2), [], tmp_path / "s"
    summary = run_sweep(parse_spec(SPEC), out, evaluate={}, together="never", executor=ex, log=logs.append)
    assert [s["status"] for s in summary] == ["ok", "failed (exit 7)", "failed (worker lost)"]
    assert ("evaluate", (RUNS[1],)) not in steps(ex, out) and ("evaluate", (RUNS[2],)) in steps(ex, out)
    assert any(RUNS[1] in m and str(out / RUNS[1] / "log.txt") in m for m in logs)


def test_an_interrupted_sweep_cancels_the_jobs_in_flight(tmp_path):
    # slots 2: runs 1 and 2 start; run 1 ends, run 2 still runs, run 3 starts; then Ctrl-C during a poll
    ex, out = FakeExecutor(slots=2, polls=[0, None, KeyboardInterrupt()]), tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(parse_spec(SPEC), out, together="never", executor=ex, log=lambda m: None)
    assert steps(ex, out) == [("train", (r,)) for r in RUNS]
    assert sorted(ex.cancelled) == [1, 2] and not ex.running  # both active jobs, not the finished one
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["status"] == "ok"
    with SweepLock(out):  # the lock was released
        pass


def test_local_executor_commands():
    ex, run = LocalExecutor(jobs=1), Path("/r/a")
    cli = [sys.executable, "-m", "vaelab.cli"]
    assert ex.argv(Job("train", [run], data_dir="/d")) == \
        cli + ["train", "--out", "/r/a", "--resume", "--data-dir", "/d"]
    assert ex.argv(Job("train_together", [run, Path("/r/b")])) == cli + ["train-together", "/r/a", "/r/b"]
    assert ex.argv(Job("evaluate", [run], {"quick": True, "iwae_images": 100, "k": 5})) == \
        cli + ["evaluate", "/r/a", "--quick", "--iwae-images", "100", "--k", "5"]
    assert ex.argv(Job("evaluate", [run], {"quick": False})) == cli + ["evaluate", "/r/a"]
    assert ex.argv(Job("ddpm_train", [run], {"profile": "quick", "resume": True})) == \
        cli + ["ddpm", "train", "--out", "/r/a", "--profile", "quick", "--resume"]
    for kind, runs in (("fly", [run]), ("train", [run, run]), ("train_together", [run]), ("evaluate", [])):
        with pytest.raises(ValueError):
            Job(kind, runs)


class Script(LocalExecutor):
    """A LocalExecutor whose every job is a given Python snippet."""

    def __init__(self, code, **kw):
        super().__init__(**kw)
        self.code = code

    def argv(self, job):
        return [sys.executable, "-c", self.code]


def wait_for(predicate, seconds=20.0):
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < seconds, "timed out"
        time.sleep(0.02)


def test_local_executor_environment_log_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    monkeypatch.setenv("VAELAB_THREADS", "7")  # the job gets the executor's share, not the caller's setting
    code = "import os, sys; print(os.environ['VAELAB_THREADS'], os.environ['PYTHONUNBUFFERED']); sys.exit(4)"
    ex, log = Script(code, jobs=1, threads=3), tmp_path / "log.txt"
    log.write_text("earlier\n")
    handle = ex.submit(Job("train", [tmp_path], log=log))
    wait_for(lambda: ex.poll(handle) is not None)
    assert ex.poll(handle) == JobResult(4, "exit 4") and not ex.poll(handle).ok
    assert log.read_text() == "earlier\n3 1\n"  # appended; the executor's share of threads
    assert run_job(Script("pass"), Job("train", [tmp_path], threads=2, log=log), every=0.01).ok


def test_local_executor_cancel_is_sigterm_then_wait(tmp_path):
    saved = tmp_path / "saved"
    code = ("import signal, sys, time\n"
            f"def save(*a):\n    open({str(saved)!r}, 'w').write('last epoch'); sys.exit(143)\n"
            "signal.signal(signal.SIGTERM, save); print('ready')\ntime.sleep(60)")
    ex, log = Script(code), tmp_path / "log.txt"
    handle = ex.submit(Job("train", [tmp_path], log=log))
    wait_for(lambda: "ready" in log.read_text())
    ex.cancel(handle)  # returns once the child has stopped
    assert saved.read_text() == "last epoch" and ex.poll(handle) == JobResult(143)
    ex.cancel(handle)  # a no-op once ended


def test_ddpm_versus_trains_the_ddpm_through_the_executor(tmp_path):
    ex = FakeExecutor(lambda job: 2)
    assert ddpm_versus(tmp_path, "quick", "/d", executor=ex) == ["ddpm/run"]
    (job,) = ex.jobs
    assert (job.kind, job.runs, job.options, job.data_dir) == \
        ("ddpm_train", (tmp_path / "ddpm" / "run",), {"profile": "quick", "resume": False}, "/d")
    (tmp_path / "ddpm" / "run").mkdir(parents=True)
    (tmp_path / "ddpm" / "run" / "config.json").write_text("{}")
    ex = FakeExecutor(lambda job: 0)  # trained, but there is no evaluated VAE to compare it with
    assert ddpm_versus(tmp_path, "quick", None, executor=ex) == ["ddpm/comparison (no evaluated VAE)"]
    assert ex.jobs[0].options == {"profile": "quick", "resume": True}


def test_a_ray_tasks_run_lock_is_held_by_its_process_after_the_task_lets_go(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    job = Job("train", (run,))
    stack = ExitStack()
    record, locks = ray_executor.lock_runs(job, stack)
    assert record == run / ray_executor.ATTEMPTS and len(locks) == 1
    executor = ray_executor.TaskExecutor(1, {}, locks)
    executor.argv = lambda job: [sys.executable, "-c", "import time; time.sleep(60)"]  # a stale training process
    handle = executor.submit(job)

    def locked() -> bool:
        fd = os.open(record, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    try:
        stack.close()  # the task (a killed worker) lets go of its descriptors ...
        assert locked()  # ... but its process still holds the run: a retry would wait for it
        with pytest.raises(VaelabError, match="still used by another process"):
            ray_executor.lock_runs(job, ExitStack(), wait=0.3)
    finally:
        handle.proc.kill()
        handle.proc.wait()
    assert not locked()
