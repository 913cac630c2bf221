"""Checkpoints: crash between the two renames, corrupt and foreign files, hostile pickles."""

import os
import pickle

import pytest
import torch

from vaelab.engine import checkpoint
from vaelab.errors import RunError
from vaelab.vae.networks import build_vae


def save_epoch(run, model, epoch):
    checkpoint.save(run, model.state_dict(), {"history": [], "optimizer": {}}, epoch)


def test_roundtrip(tmp_path):
    m = build_vae("conv", "32-64", 3)
    save_epoch(tmp_path, m, 4)
    w = checkpoint.load_weights(tmp_path / checkpoint.WEIGHTS, m.state_dict())
    assert all(torch.equal(w[k], v) for k, v in m.state_dict().items())
    assert checkpoint.load_state(tmp_path)["epoch"] == 4 and checkpoint.weights_epoch(tmp_path / checkpoint.WEIGHTS) == 4


def test_kill_between_renames_rolls_forward(tmp_path, monkeypatch):
    m = build_vae("dense", "16-32", 2)
    save_epoch(tmp_path, m, 1)
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith(checkpoint.WEIGHTS):
            raise KeyboardInterrupt  # killed right after the commit point
        real_replace(src, dst)

    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_epoch(tmp_path, m, 2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert checkpoint.weights_epoch(tmp_path / checkpoint.WEIGHTS) == 1  # torn: state says 2
    checkpoint.recover(tmp_path)
    assert checkpoint.weights_epoch(tmp_path / checkpoint.WEIGHTS) == 2
    w = checkpoint.load_weights(tmp_path / checkpoint.WEIGHTS)
    assert all(torch.equal(w[k], v) for k, v in m.state_dict().items())


def test_kill_before_commit_keeps_old_pair(tmp_path):
    m = build_vae("dense", "16-32", 2)
    save_epoch(tmp_path, m, 1)
    (tmp_path / (checkpoint.WEIGHTS + ".next")).write_bytes(b"half a file")
    (tmp_path / (checkpoint.STATE + ".next")).write_bytes(b"half")
    checkpoint.recover(tmp_path)
    assert checkpoint.load_state(tmp_path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.WEIGHTS, checkpoint.STATE]


def test_truncated_and_foreign_weights(tmp_path):
    m = build_vae("conv", "32-64-128", 10)
    save_epoch(tmp_path, m, 1)
    other = build_vae("conv", "32-64-128", 5)
    with pytest.raises(RunError, match="another model"):
        checkpoint.load_weights(tmp_path / checkpoint.WEIGHTS, other.state_dict())
    blob = (tmp_path / checkpoint.WEIGHTS).read_bytes()
    (tmp_path / checkpoint.WEIGHTS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RunError, match="not a readable safetensors"):
        checkpoint.load_weights(tmp_path / checkpoint.WEIGHTS)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_STATE",))


def test_hostile_state_pickle_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / checkpoint.STATE, "wb") as f:
        pickle.dump({"epoch": 1, "x": Evil()}, f)
    with pytest.raises(RunError, match="corrupt or not a vaelab state"):
        checkpoint.load_state(tmp_path)
    assert not (tmp_path / "PWNED_BY_STATE").exists()


def test_the_same_checkpoint_is_the_same_bytes_in_every_process(tmp_path):
    """The weights file depends on the weights alone, not on the process (hash order of its metadata)."""
    import hashlib
    import subprocess
    import sys
    code = ("import sys, torch; from pathlib import Path; from vaelab.engine import checkpoint\n"
            "checkpoint.save(Path(sys.argv[1]), {'w': torch.arange(6.).reshape(2, 3)}, {}, 3)\n")
    digests = set()
    for i in range(8):
        folder = tmp_path / str(i)
        folder.mkdir()
        subprocess.run([sys.executable, "-c", code, str(folder)], check=True, timeout=120)
        digests.add(hashlib.sha256((folder / checkpoint.WEIGHTS).read_bytes()).hexdigest())
    assert len(digests) == 1
