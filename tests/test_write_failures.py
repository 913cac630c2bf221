"""Write failures (disk full, I/O error, read-only folder): the previous version of every file stays whole and
readable, the command says which file and why (exit code 6), and the run resumes once space is back."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelab import plots
from vaelab.cli.main import main
from vaelab import files
from vaelab.engine import checkpoint
from vaelab.errors import WriteFailed
from vaelab.studies import report

pytestmark = pytest.mark.faults

TRAIN = ["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--batch-size", "32", "--device", "cpu"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def final(run_dir):
    weights = checkpoint.load_weights(run_dir / checkpoint.WEIGHTS)
    history = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return weights, history


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if ".next" in p.name)


def test_atomic_text_keeps_the_old_version_and_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def half_then_full(path, data):
        Path(path).write_bytes(data[:3])
        no_space()
    monkeypatch.setattr(files, "write_bytes_durably", half_then_full)
    with pytest.raises(WriteFailed, match=r"could not write .*metrics.json: No space left on device \(its previous "
                                          r"version is intact"):
        files.atomic_write_text(target, "new and longer\n")
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []
    assert WriteFailed.exit_code == 6


def test_a_training_whose_checkpoint_cannot_be_written_keeps_the_last_one_and_resumes(tmp_path, tiny_mnist,
                                                                                     monkeypatch, capsys):
    args = [*TRAIN, "--data-dir", str(tiny_mnist)]
    assert main([*args, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    good = {n: (tmp_path / "r" / n).read_bytes() for n in (checkpoint.WEIGHTS, checkpoint.STATE, "metrics.jsonl")}
    real_save = torch.save

    def full_disk(obj, f, *a, **k):  # half a file, then the disk is full
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        no_space()
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    code = main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "3", "--data-dir", str(tiny_mnist)])
    err = capsys.readouterr().err
    assert code == 6 and f"could not write {tmp_path / 'r' / 'state.pt'}: No space left on device" in err
    assert "Traceback" not in err and "internal error" not in err
    assert {n: (tmp_path / "r" / n).read_bytes() for n in good} == good and leftovers(tmp_path / "r") == []
    monkeypatch.undo()  # space is back
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "3",
                 "--data-dir", str(tiny_mnist)]) == 0
    (wa, ha), (wb, hb) = final(tmp_path / "whole"), final(tmp_path / "r")
    assert ha == hb and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_failed_history_write_is_repaired_by_the_resume(tmp_path, tiny_mnist, monkeypatch, capsys):
    """state.pt committed, metrics.jsonl not: the resume rewrites the history from the checkpoint."""
    args = [*TRAIN, "--data-dir", str(tiny_mnist)]
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "whole")]) == 0
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    monkeypatch.setattr(checkpoint, "write_history", lambda run_dir, history: no_space())
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "2",
                 "--data-dir", str(tiny_mnist)]) != 0
    monkeypatch.undo()
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "3",
                 "--data-dir", str(tiny_mnist)]) == 0
    history = final(tmp_path / "r")[1]
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[:2] == final(tmp_path / "whole")[1]


def test_a_figure_that_cannot_be_saved_leaves_the_previous_png(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    target = tmp_path / "samples.png"
    plots.image_grid(torch.rand(4, 28, 28).numpy(), 2, 2, "before", target)
    before = target.read_bytes()
    monkeypatch.setattr(files.os, "replace", no_space)
    with pytest.raises(WriteFailed, match="samples.png"):
        plots.image_grid(torch.rand(4, 28, 28).numpy(), 2, 2, "after", target)
    assert target.read_bytes() == before and leftovers(tmp_path) == []


def test_a_failed_report_export_keeps_the_previous_export(tmp_path, monkeypatch):
    out, dest = tmp_path / "repro", tmp_path / "export"
    (out / "figs").mkdir(parents=True)
    (out / "figs" / "a.png").write_bytes(b"png-new")
    (out / "REPORT.md").write_text("# report\n![a](figs/a.png)\n")
    (dest / "figs").mkdir(parents=True)
    (dest / "REPORT.md").write_text("# old report\n")
    (dest / "figs" / "a.png").write_bytes(b"png-old")

    def copy_half(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:2])
        no_space()
    monkeypatch.setattr(report.shutil, "copyfile", copy_half)
    with pytest.raises(WriteFailed, match="REPORT.md"):
        report.export(out, dest)
    assert (dest / "REPORT.md").read_text() == "# old report\n" and (dest / "figs" / "a.png").read_bytes() == b"png-old"
    assert leftovers(dest) == [] and leftovers(dest / "figs") == []


def test_a_read_only_folder_is_one_clear_error(tmp_path, tiny_mnist, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code = main([*TRAIN, "--epochs", "1", "--out", str(folder / "r"), "--data-dir", str(tiny_mnist)])
    assert code in (4, 6) and "Permission denied" in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_really_full_disk(small_disk, tiny_mnist):
    """Train one epoch on a small tmpfs, fill it, resume: exit code 6 and the checkpoint intact; free the space,
    resume again: the run finishes."""
    run_dir = small_disk / "r"

    def vaelab(*args):
        p = subprocess.run([sys.executable, "-m", "vaelab.cli", *map(str, args)], capture_output=True, text=True,
                           env={**os.environ, "VAELAB_THREADS": "1"}, timeout=300)
        return p.returncode, p.stderr
    assert vaelab(*TRAIN, "--epochs", "1", "--out", run_dir, "--data-dir", tiny_mnist)[0] == 0
    good = (run_dir / checkpoint.STATE).read_bytes()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - 8192)  # room for the new config.json, not for a checkpoint
    code, err = vaelab("train", "--out", run_dir, "--resume", "--epochs", "2", "--data-dir", tiny_mnist)
    assert code == 6 and "Traceback" not in err, err
    assert f"could not write {run_dir / 'state.pt'}: No space left on device" in err, err
    assert (run_dir / checkpoint.STATE).read_bytes() == good and leftovers(run_dir) == []
    assert checkpoint.load_state(run_dir)["epoch"] == 1
    filler.unlink()
    code, err = vaelab("train", "--out", run_dir, "--resume", "--epochs", "2", "--data-dir", tiny_mnist)
    assert code == 0, err
    assert checkpoint.load_state(run_dir)["epoch"] == 2
