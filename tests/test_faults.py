"""Fault injection with real processes: SIGKILL at random moments, SIGINT/SIGTERM, disk full, sweeps killed."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_mnist

from vaelab.data.images import load
from vaelab.engine import checkpoint
from vaelab.engine.runs import prepare_new, write_config
from vaelab.errors import WriteFailed
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.train import train_vae

pytestmark = pytest.mark.faults

TRAIN = ["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--batch-size", "32",
         "--device", "cpu"]


def env():
    e = {**os.environ, "VAELAB_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    e.pop("VAELAB_DATA", None)
    return e


def start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "vaelab.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), start_new_session=True, **kw)


def run(args):
    p = start(args)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def final_state(run_dir):
    """Weights and metrics (without timings) of a finished run."""
    weights = checkpoint.load_weights(run_dir / checkpoint.WEIGHTS)
    metrics = [{k: v for k, v in json.loads(l).items() if "seconds" not in k}
               for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return weights, metrics


def same(a, b):
    (wa, ma), (wb, mb) = a, b
    return ma == mb and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for(path, timeout=60):
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.02)


def kill_group(p):
    """SIGKILL p's process group and reap p; its exit code (-SIGKILL when the kill reached a live process)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group had already exited and been reaped: the kill came too late
        pass
    return p.wait()


def lines(run_dir):
    """Epochs in metrics.jsonl (cheap enough to poll while the run trains)."""
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def epochs_done(run_dir):
    """Completed epochs recorded in a run folder: its committed checkpoint or its metrics lines (0 if none)."""
    state = checkpoint.load_state(run_dir)["epoch"] if (run_dir / checkpoint.STATE).exists() else 0
    return max(lines(run_dir), state)


def epoch_times(p, run_dir, epochs):
    """Seconds from config.json to each completed epoch (metrics.jsonl growing) of the running process p."""
    wait_for(run_dir / "config.json")
    t0, times = time.perf_counter(), []
    while len(times) < epochs:
        ended = p.poll() is not None
        times += [time.perf_counter() - t0] * (lines(run_dir) - len(times))
        if ended:
            break
        time.sleep(0.002)
    return times


def kill_trials(tmp_path, data, trials, epochs=6, seed=1234):
    """Kill training at random moments (SIGKILL), resume until done; the result must equal a clean run.

    The moment is drawn in epochs: wait until epoch j is checkpointed (j = 0: config.json written), then
    sleep a fraction frac of the reference run's median epoch, up to 1.5 (so checkpoint writes are
    hit) but below 0.7 in the last epoch. Each trial asserts that the kill landed before the run finished:
    a kill after the last epoch would prove nothing."""
    args = [*TRAIN, "--epochs", epochs, "--data-dir", data]
    p = start([*args, "--out", tmp_path / "ref"])
    times = epoch_times(p, tmp_path / "ref", epochs)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert len(times) == epochs
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    epoch_s = gaps[len(gaps) // 2]  # the median epoch (4,096 images: ~0.3 s), robust to a missed poll
    reference = final_state(tmp_path / "ref")
    rng = random.Random(seed)
    for trial in range(trials):
        run_dir = tmp_path / f"t{trial}"
        j = rng.randrange(epochs)  # the epoch to kill in (0-based)
        frac = rng.uniform(0.0, 0.7 if j == epochs - 1 else 1.5)
        p = start([*args, "--out", run_dir])
        wait_for(run_dir / "config.json")
        while lines(run_dir) < j and p.poll() is None:
            time.sleep(0.002)
        time.sleep(frac * epoch_s)  # anywhere in training, checkpoint writes included
        code = kill_group(p)
        done = epochs_done(run_dir)  # read right after the kill
        assert code == -signal.SIGKILL and done < epochs, \
            f"trial {trial}: the kill (epoch {j + 1}, +{frac:.2f} epoch) came after the run ended ({done} epochs, exit {code})"
        for _ in range(epochs + 1):  # resume (killing again sometimes) until finished
            resume = [*args, "--out", run_dir, "--resume"] if (run_dir / checkpoint.STATE).exists() \
                else [*args, "--out", run_dir]
            if not (run_dir / checkpoint.STATE).exists():
                for f in run_dir.iterdir():  # killed before the first checkpoint: start again
                    f.unlink()
            code, _, err = run(resume)
            if code == 0:
                break
        assert code == 0, err
        assert same(final_state(run_dir), reference), f"trial {trial} differs from the uninterrupted run"
        assert not list(run_dir.glob("*.next"))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    kill_trials(tmp_path, write_mnist(tmp_path / "mnist", n_train=4096), trials=3)


@pytest.mark.slow
def test_sigkill_twenty_trials(tmp_path):
    kill_trials(tmp_path, write_mnist(tmp_path / "mnist", n_train=4096), trials=20, seed=99)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_sigterm_keep_last_epoch(tmp_path, tiny_mnist, sig, code):
    run_dir = tmp_path / "r"
    p = start([*TRAIN, "--epochs", 200, "--out", run_dir, "--data-dir", tiny_mnist])
    wait_for(run_dir / "metrics.jsonl")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err and "interrupted" in err
    epoch = checkpoint.load_state(run_dir)["epoch"]
    assert epoch >= 1 and len((run_dir / "metrics.jsonl").read_text().splitlines()) == epoch
    rc, _, err = run([*TRAIN[:1], "--out", run_dir, "--resume", "--epochs", epoch + 1, "--data-dir", tiny_mnist])
    assert rc == 0, err


def test_disk_full_keeps_previous_checkpoint(tmp_path, tiny_mnist, monkeypatch):
    cfg = VAEConfig(model=VAEModelConfig("dense", "16-32", 2), train=VAETrainConfig(epochs=2, batch_size=64, device="cpu"))
    run_dir = tmp_path / "r"
    prepare_new(run_dir)
    write_config(run_dir, cfg)
    one = VAEConfig(model=cfg.model, train=VAETrainConfig(epochs=1, batch_size=64, device="cpu"))
    train_vae(run_dir, one, load("mnist", tiny_mnist), log=lambda m: None)
    good = (run_dir / checkpoint.WEIGHTS).read_bytes(), (run_dir / checkpoint.STATE).read_bytes()

    def full_disk(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(WriteFailed, match="could not write .*state.pt: No space left"):
        train_vae(run_dir, cfg, load("mnist", tiny_mnist), resume=True, log=lambda m: None)
    monkeypatch.undo()
    checkpoint.recover(run_dir)
    assert ((run_dir / checkpoint.WEIGHTS).read_bytes(), (run_dir / checkpoint.STATE).read_bytes()) == good
    assert checkpoint.load_state(run_dir)["epoch"] == 1


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "log.txt"}


def test_sweep_killed_then_rerun_finishes_only_the_rest(tmp_path, tiny_mnist):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "k"\n[base]\nmodel.family = "dense"\nmodel.arch = "16-32"\ntrain.epochs = 2\n'
                    'train.batch_size = 32\ntrain.device = "cpu"\n[grid]\n"model.latent_dim" = [1, 2, 3, 4]\n')
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--no-evaluate", "--data-dir", tiny_mnist]
    p = start(args)
    first = out / "dense-16-32_z1_beta1_seed0"
    t0 = time.time()
    while not (first / "metrics.jsonl").exists() or len((first / "metrics.jsonl").read_text().splitlines()) < 2:
        assert time.time() - t0 < 120
        time.sleep(0.05)
    time.sleep(0.3)
    code = kill_group(p)  # the sweep and its worker die together
    done_before = {d.name: digest(d) for d in out.iterdir() if d.is_dir()
                   and (d / "metrics.jsonl").exists() and len((d / "metrics.jsonl").read_text().splitlines()) == 2}
    assert done_before  # at least the first run had finished
    # and the kill landed before the sweep ended (else the rerun below has nothing left to do)
    assert code == -signal.SIGKILL and len(done_before) < 4, (code, sorted(done_before))
    code, stdout, err = run(args)
    assert code == 0, err
    assert stdout.count("done (earlier)") >= len(done_before) and "4 of 4 runs done" in stdout
    for name, hashes in done_before.items():
        assert digest(out / name) == hashes, f"{name} was touched by the rerun"


def job_processes(out) -> set[int]:
    """Live vaelab job processes working under `out` (found in /proc, zombies left out)."""
    found = set()
    for proc in (p for p in (Path("/proc")).iterdir() if p.name.isdigit()):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"vaelab.cli" in argv and b"--resume" in argv and any(str(out).encode() in a for a in argv) and state != "Z":
            found.add(int(proc.name))
    return found


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)])
def test_a_sweep_stopped_alone_takes_its_job_processes_with_it(tmp_path, tiny_mnist, sig, code):
    """SIGTERM (the sweep cancels its jobs) or SIGKILL (the jobs get SIGTERM from the kernel) on the sweep's own
    process: no job trains on as an orphan, and the rerun finishes every run."""
    spec = tmp_path / "s.toml"
    spec.write_text('name = "o"\n[base]\nmodel.family = "dense"\nmodel.arch = "16-32"\ntrain.epochs = 20000\n'
                    'train.batch_size = 32\ntrain.device = "cpu"\n[grid]\n"model.latent_dim" = [1, 2]\n')
    out = tmp_path / "sweep"
    p = start(["sweep", spec, "--out", out, "--no-evaluate", "--jobs", "2", "--data-dir", tiny_mnist])
    wait_for(out / "dense-16-32_z1_beta1_seed0" / "metrics.jsonl", timeout=120)
    assert job_processes(out)
    p.send_signal(sig)  # the sweep's process only, not its group
    assert p.wait(timeout=120) == code
    t0 = time.time()
    try:
        while job_processes(out):  # its 20,000 epochs would take an hour
            assert time.time() - t0 < 30, "a job process trains on without its sweep"
            time.sleep(0.1)
    finally:
        for pid in job_processes(out):
            os.kill(pid, signal.SIGKILL)
    runs = [out / f"dense-16-32_z{z}_beta1_seed0" for z in (1, 2)]
    assert all(checkpoint.load_state(r)["epoch"] >= 1 for r in runs if (r / "state.pt").exists())
