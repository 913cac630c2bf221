"""One writer per run folder: a second writer is refused with the holder's PID; a dead holder's lock is taken."""

import os
import signal
import subprocess
import sys
import time

import pytest

from vaelab.engine.lock import HELD_ENV, LOCK, holder, run_lock
from vaelab.errors import RunError

pytestmark = pytest.mark.faults

TRY_LOCK = ("import sys; from vaelab.engine.lock import run_lock\n"
            "from vaelab.errors import RunError\n"
            "try:\n    with run_lock(sys.argv[1], command='probe'):\n        print('locked')\n"
            "except RunError as e:\n    print('refused:', e)\n")
TINY = ["--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--batch-size", "32", "--device", "cpu"]


def env(**extra):
    e = {**os.environ, "VAELAB_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    e.pop("VAELAB_DATA", None)
    return e


def try_lock(folder, **extra) -> str:
    """Whether another process can take the lock of `folder` now."""
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(folder)], capture_output=True, text=True,
                          env=env(**extra), timeout=60).stdout.strip()


def vaelab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "vaelab.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), start_new_session=True, **kw)


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    run = tmp_path / "r"
    with run_lock(run, command="vaelab train --out r"):
        answer = try_lock(run)
        assert answer.startswith("refused:") and f"process {os.getpid()} (vaelab train --out r)" in answer
        assert holder(run) == f"process {os.getpid()} (vaelab train --out r)"
    assert try_lock(run) == "locked"


def test_the_lock_is_reentrant_in_one_process_and_released_at_the_end(tmp_path):
    with run_lock(tmp_path / "a", tmp_path / "b"):
        with run_lock(tmp_path / "a"):
            pass
        assert try_lock(tmp_path / "a").startswith("refused:")  # the outer block still holds it
    assert try_lock(tmp_path / "a") == "locked" and try_lock(tmp_path / "b") == "locked"


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    run = tmp_path / "r"
    holder_proc = subprocess.Popen([sys.executable, "-c", "import sys, time; from vaelab.engine.lock import run_lock\n"
                                    "with run_lock(sys.argv[1], command='sleeper'):\n    print('in', flush=True)\n"
                                    "    time.sleep(600)\n", str(run)], stdout=subprocess.PIPE, text=True, env=env())
    assert holder_proc.stdout.readline().strip() == "in"
    assert "sleeper" in try_lock(run)
    holder_proc.send_signal(signal.SIGKILL)
    holder_proc.wait()
    assert (run / LOCK).read_text().split()[1] == "sleeper"  # the stale file is still there ...
    assert try_lock(run) == "locked"  # ... and the lock is free: the kernel dropped it with the process


def test_ranks_of_a_holder_do_not_take_it_again(tmp_path):
    run = tmp_path / "r"
    with run_lock(run):
        assert try_lock(run, **{HELD_ENV: str(run.resolve())}) == "locked"


def test_a_file_where_the_folder_should_be_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunError, match="not a folder"):
        with run_lock(tmp_path / "f"):
            pass


def test_every_writer_is_refused_while_a_training_runs(tmp_path, tiny_mnist):
    """While `vaelab train` works on R: train --resume, evaluate and figures on R exit with code 4 naming its PID;
    once it is killed, --resume continues the run."""
    run = tmp_path / "r"
    first = vaelab("train", *TINY, "--epochs", "2", "--out", run, "--data-dir", tiny_mnist)
    first.communicate(timeout=300)
    trainer = vaelab("train", "--out", run, "--resume", "--epochs", "5000", "--data-dir", tiny_mnist)
    deadline = time.time() + 120
    while time.time() < deadline and (run / "metrics.jsonl").read_text().count("\n") < 3:
        time.sleep(0.05)  # the resumed process trains (and so holds the lock) once a third epoch is written
    try:
        for args in (["train", "--out", run, "--resume", "--data-dir", tiny_mnist],
                     ["evaluate", run, "--quick", "--data-dir", tiny_mnist],
                     ["figures", run, "--data-dir", tiny_mnist]):
            p = vaelab(*args)
            _, err = p.communicate(timeout=120)
            assert p.returncode == 4, err
            assert f"is in use by process {trainer.pid} (vaelab train --out {run} --resume" in err, err
            assert err.count("\n") == 1 and "Traceback" not in err
    finally:
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait()
    p = vaelab("train", "--out", run, "--resume", "--epochs", "4", "--data-dir", tiny_mnist)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
