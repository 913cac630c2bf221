"""Bad inputs at the command line: gzip bombs and impossible models end as one clean error, fast and small."""

import os
import resource
import subprocess
import sys
import threading
import time

import pytest

from conftest import write_mnist
from test_idx import gzip_bomb, header

RSS_LIMIT = 400 << 20  # the command with torch imported peaks near 350 MB; an inflated 2 GiB bomb is far over
SECONDS_LIMIT = 30  # importing torch takes most of it on a busy machine; inflating 20 GiB takes minutes
DATA_LIMIT = 4 << 30  # a safety net (RLIMIT_DATA): a regression fails with MemoryError instead of swapping


def limit_memory():
    """In the child: cap its data memory, so a bomb that is inflated after all cannot take the machine."""
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


def vaelab_measured(tmp_path, *args) -> tuple[int, str, str, float, int]:
    """Run `python -m vaelab.cli ARGS`: (exit code, stdout, stderr, seconds, peak RSS of that child in bytes)."""
    env = {**os.environ, "VAELAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("VAELAB_DATA", None)
    with open(tmp_path / "stdout", "w+") as out, open(tmp_path / "stderr", "w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "vaelab.cli", *map(str, args)], stdout=out, stderr=err,
                                 env=env, preexec_fn=limit_memory)
        watchdog = threading.Timer(180, child.kill)
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's so far
        watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read(), err.read(), seconds, usage.ru_maxrss * 1024


def assert_one_clean_line(code, err, expected_code, fragment):
    """Exit code, no traceback, and exactly one 'vaelab: error:' line, holding `fragment`."""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == expected_code and "Traceback" not in err and len(errors) == 1, (code, err)
    assert errors[0].startswith("vaelab: error:") and fragment in errors[0], err


def bomb_folder(tmp_path, name: str, head: bytes, total: int):
    """A tiny MNIST folder whose file `name` is a gzip of `head` then zeros, `total` bytes uncompressed."""
    folder = write_mnist(tmp_path / "data")
    (folder / name).unlink()
    (folder / (name + ".gz")).write_bytes(gzip_bomb(head, total - len(head)))
    return folder


def train(tmp_path, folder, *extra):
    """Train a tiny dense VAE on `folder` (it is refused before the first step)."""
    return vaelab_measured(tmp_path, "train", "--data-dir", folder, "--epochs", "1", "--model", "dense",
                           "--arch", "8-16", "--latent-dim", "2", "--device", "cpu", "--out", tmp_path / "run", *extra)


@pytest.mark.parametrize("name, head, total, fragment", [
    ("t10k-images-idx3-ubyte", header(10000, 28, 28), 2 << 30, "has trailing bytes: more than 7840016 bytes"),
    ("t10k-images-idx3-ubyte", header(10000, 28, 28), 20 << 30, "has trailing bytes: more than 7840016 bytes"),
    ("t10k-labels-idx1-ubyte", header(64) + bytes(64), 20 << 30, "has trailing bytes: more than 72 bytes"),
    ("t10k-images-idx3-ubyte", header(4_000_000_000, 28, 28), 1 << 20, "truncated: 1048576 bytes, header says"),
], ids=["images-2GiB", "images-20GiB", "labels-20GiB-md5", "images-claims-4e9"])
def test_train_refuses_a_gzip_bomb_quickly_in_little_memory(tmp_path, name, head, total, fragment):
    folder = bomb_folder(tmp_path, name, head, total)
    code, out, err, seconds, rss = train(tmp_path, folder)
    assert_one_clean_line(code, err, 3, fragment)
    assert name in err and seconds < SECONDS_LIMIT and rss < RSS_LIMIT, (seconds, rss >> 20)


def test_data_info_reports_a_gzip_bomb_without_inflating_it(tmp_path):
    folder = bomb_folder(tmp_path, "t10k-images-idx3-ubyte", header(10000, 28, 28), 20 << 30)
    code, out, err, seconds, rss = vaelab_measured(tmp_path, "data", "info", "--data-dir", folder)
    assert code == 3 and "Traceback" not in err and "has trailing bytes: more than 7840016 bytes" in out, (out, err)
    assert seconds < SECONDS_LIMIT and rss < RSS_LIMIT, (seconds, rss >> 20)


def test_train_refuses_a_model_too_large_before_building_it(tmp_path):
    folder = write_mnist(tmp_path / "data")
    code, out, err, seconds, rss = train(tmp_path, folder, "--arch", "99999999-99999999")
    assert_one_clean_line(code, err, 2, "dense architecture 99999999-99999999 at latent_dim 2 has "
                                        "20,000,157,399,999,212 parameters: training needs 320,002,518,399,987,392 bytes")
    assert "over the limit of" in err and seconds < SECONDS_LIMIT and rss < RSS_LIMIT, (seconds, rss >> 20)
