"""Soak: a sweep SIGKILLed at 50 random moments (with its job processes), then run to the end, equals an
uninterrupted sweep: the same weights byte for byte (sha256) and the same metrics, timings aside."""

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

from conftest import write_mnist

pytestmark = [pytest.mark.slow, pytest.mark.faults]

KILLS = 50
SPEC = """name = "soak"
[base]
model.family = "dense"
model.arch = "16-32"
train.epochs = 400
train.batch_size = 16
train.device = "cpu"
[grid]
"model.latent_dim" = [2, 3]
"""


def fingerprint(out: Path) -> dict:
    """sha256 of each run's weights and its metrics.jsonl without timings, by run."""
    found = {}
    for run in sorted(p for p in out.iterdir() if (p / "config.json").is_file()):
        metrics = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
                   for line in (run / "metrics.jsonl").read_text().splitlines()]
        found[run.name] = (hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest(), metrics)
    return found


def soak(start, kill, kills: int, seed: int, lo: float = 0.5, hi: float = 10.0) -> int:
    """Start the sweep and kill it at a random moment, `kills` times (a start that ended by itself before its
    kill does not count, and would mean the work was too short); the kills that landed."""
    rng, landed = random.Random(seed), 0
    while landed < kills:
        p = start()
        time.sleep(rng.uniform(lo, hi))
        if p.poll() is not None:
            assert p.returncode == 0, "a sweep failed between two kills"
            pytest.fail(f"the sweep finished after {landed} kills: make its work longer")
        kill(p)
        landed += 1
    return landed


def local_sweep(spec: Path, out: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "VAELAB_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vaelab.cli", "sweep", str(spec), "--out", str(out),
                             "--no-evaluate", "--jobs", "2", "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the sweep and its job processes together, as a power cut would."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def test_fifty_kills_of_a_local_sweep_change_no_byte(tmp_path):
    data = write_mnist(tmp_path / "mnist", n_train=4096, n_test=64)
    spec = tmp_path / "soak.toml"
    spec.write_text(SPEC)
    whole = local_sweep(spec, tmp_path / "whole", data)
    assert whole.wait(timeout=900) == 0  # about 80 s a run: 50 kills at 0.5-10 s (after ~5 s of start-up) end none
    out = tmp_path / "soaked"
    assert soak(lambda: local_sweep(spec, out, data), kill_group, KILLS, seed=26) == KILLS
    last = local_sweep(spec, out, data)
    assert last.wait(timeout=900) == 0
    assert fingerprint(out) == fingerprint(tmp_path / "whole") and len(fingerprint(out)) == 2
