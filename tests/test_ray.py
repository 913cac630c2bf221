"""Sweeps on Ray: the same run folders as the local executor, bit for bit; a killed worker is retried and
resumes; a cancelled task leaves a resumable run; a killed (or interrupted) driver and a rerun redo no
finished run; runs spread over two nodes.

One simulated two-node cluster (ray.cluster_utils.Cluster, 1 CPU per node: a local Ray with 2 CPUs) serves
the whole module; without Ray installed only the install message is tested."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_mnist
from vaelab.cli.main import main
from vaelab.errors import VaelabError
from vaelab.studies.executors import Job, LocalExecutor
from vaelab.studies.ray_executor import ATTEMPTS, INSTALL, RayExecutor
from vaelab.studies.sweep import configs, is_done, parse_spec, prepare, run_sweep

# 3 epochs of 512 steps (about half a second each on a free core): long enough to kill a run mid-way
SPEC = """
name = "ray"
[base]
model.family = "dense"
model.arch = "16-32"
train.epochs = 3
train.batch_size = 8
train.device = "cpu"
[grid]
"model.latent_dim" = [2, 3]
"""
RUNS = ["dense-16-32_z2_beta1_seed0", "dense-16-32_z3_beta1_seed0"]
MB = 1024 * 1024
# a driver as a person starts it: Ctrl-C raises KeyboardInterrupt even if this test process ignores SIGINT
DRIVER = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from vaelab.cli.main import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of 1 CPU each on this machine, this process connected as the driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster
    with pytest.MonkeyPatch.context() as env:  # read by the Ray processes started here
        env.setenv("VAELAB_THREADS", os.environ.get("VAELAB_THREADS", "1"))
        # Ray's own clean-up of a dead worker's children off (older Rays lack it): vaelab's must suffice
        for cleanup in ("process_group_cleanup_enabled", "kill_child_processes_on_worker_exit",
                        "kill_child_processes_on_worker_exit_with_raylet_subreaper"):
            env.setenv(f"RAY_{cleanup}", "0")
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * MB,
                                                          "include_dashboard": False})
        c.add_node(num_cpus=1, object_store_memory=100 * MB)
        ray.init(address=c.address, logging_level="WARNING")
        yield c
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A synthetic MNIST of 4,096 training images."""
    return write_mnist(tmp_path_factory.mktemp("data"), n_train=4096, n_test=64)


@pytest.fixture(scope="module")
def swept(cluster, data, tmp_path_factory) -> tuple[Path, Path]:
    """The two runs of SPEC trained by the local executor and through Ray: (local folder, Ray folder)."""
    base = tmp_path_factory.mktemp("swept")
    local, on_ray = base / "local", base / "ray"
    run_sweep(parse_spec(SPEC), local, data_dir=str(data), log=lambda m: None, executor=LocalExecutor(2, threads=1))
    with RayExecutor() as ex:
        summary = run_sweep(parse_spec(SPEC), on_ray, data_dir=str(data), log=lambda m: None, executor=ex)
    assert [s["status"] for s in summary] == ["ok", "ok"]
    return local, on_ray


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def attempts(run: Path) -> list[list[str]]:
    """The lines of RUN/.ray-attempts: token, node id, worker pid, time."""
    path = run / ATTEMPTS
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def epochs(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def hashes(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}


def trainers(run: Path) -> set[int]:
    """The live (not zombie) vaelab processes working on `run`."""
    found = set()
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"vaelab.cli" in argv and str(run).encode() in argv and state != "Z":
            found.add(int(proc.name))
    return found


def wait_for(predicate, seconds=120.0, every=0.01):
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < seconds, "timed out"
        time.sleep(every)


def test_without_ray_the_error_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(VaelabError, match=r"pip install 'vaelab\[ray\]'"):
        RayExecutor()
    assert main(["sweep", "dense", "--out", str(tmp_path / "s"), "--executor", "ray"]) == 2
    assert INSTALL in capsys.readouterr().err


def test_a_relative_out_is_refused_and_help_says_why(capsys):
    assert main(["sweep", "dense", "--out", "runs/s", "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "absolute path" in err and "every node sees" in err and "Traceback" not in err
    assert main(["sweep", "dense", "--out", "/abs/s", "--gpus-per-run", "0.5"]) == 2  # a Ray option, no Ray
    assert "only with --executor ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert "every node sees" in " ".join(capsys.readouterr().out.split())


def test_ray_runs_equal_local_runs_bit_for_bit(swept):
    local, on_ray = swept
    for name in RUNS:
        assert same_weights(local / name, on_ray / name)
        drop = ("epoch_seconds", "seconds")
        rows = [[{k: v for k, v in json.loads(line).items() if k not in drop}
                 for line in (folder / name / "metrics.jsonl").read_text().splitlines()] for folder in swept]
        assert rows[0] == rows[1] and len(rows[0]) == 3
        assert len(attempts(on_ray / name)) == 1  # not retried


def test_runs_spread_over_both_nodes(cluster, swept):
    import ray
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    used = {line[1] for name in RUNS for line in attempts(swept[1] / name)}
    assert len(nodes) == 2 and used == nodes


def test_a_worker_killed_mid_run_is_retried_and_resumes(cluster, swept, data, tmp_path):
    out, name, logs, result = tmp_path / "s", RUNS[0], [], {}
    spec = parse_spec(SPEC.replace("[2, 3]", "[2]"))

    def sweep():
        with RayExecutor() as ex:
            result["summary"] = run_sweep(spec, out, data_dir=str(data), log=logs.append, executor=ex)

    driver = threading.Thread(target=sweep)
    driver.start()
    wait_for(lambda: epochs(out / name) >= 1)  # its first epoch is checkpointed
    done_at_kill, orphans = epochs(out / name), trainers(out / name)
    os.kill(int(attempts(out / name)[0][2]), signal.SIGKILL)  # the Ray worker; its vaelab process dies with it
    wait_for(lambda: not orphans & trainers(out / name), seconds=10)
    driver.join(timeout=180)
    assert 1 <= done_at_kill < 3 and len(orphans) == 1, "the kill should land mid-run"
    (status,) = result["summary"]
    assert (status["status"], status.get("retries")) == ("ok", 1)
    assert any("retried 1x" in m for m in logs)
    pids = [line[2] for line in attempts(out / name)]
    assert len(pids) == 2 and pids[0] != pids[1]
    log = (out / name / "log.txt").read_text()
    tries = log.split("training dense")[1:]
    assert len(tries) == 2 and "epoch 1/3" in tries[0] and "epoch 1/3" not in tries[1]  # the retry resumed
    assert log.count("epoch 3/3") == log.count("done:") == 1  # the killed worker's process trained no further
    assert same_weights(out / name, swept[0] / name)  # resumed from its checkpoint: the uninterrupted weights


def test_a_cancelled_task_stops_its_run_and_leaves_it_resumable(cluster, data, tmp_path):
    prepare(tmp_path, configs(parse_spec(SPEC.replace("[2, 3]", "[2]"))))
    run = tmp_path / RUNS[0]
    with RayExecutor() as ex:
        handle = ex.submit(Job("train", (run,), data_dir=str(data), log=run / "log.txt"))
        wait_for(lambda: epochs(run) >= 1)
        ex.cancel(handle)  # what Ctrl-C on the driver does to each task in flight; returns once it has stopped
        assert ex.poll(handle).code == 130 and not trainers(run)
    assert "interrupted (SIGTERM)" in (run / "log.txt").read_text()  # its vaelab process saved and stopped
    saved = epochs(run)
    time.sleep(1)
    assert 1 <= saved < 3 and epochs(run) == saved and not is_done(run, evaluate=False)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == saved


def start_driver(cluster, spec: Path, out: Path, data: Path, log: Path) -> subprocess.Popen:
    """`vaelab sweep SPEC --executor ray` against the module's cluster, as its own process."""
    argv = ["sweep", str(spec), "--out", str(out), "--no-evaluate", "--data-dir", str(data),
            "--executor", "ray", "--ray-address", cluster.address]
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-c", DRIVER, *argv], stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def finished(log: Path) -> list[str]:
    """The runs a driver reported as finished (it reports a run after the run's process has ended)."""
    text = log.read_text() if log.exists() else ""
    return [line.split(":")[0].strip() for line in text.splitlines() if line.startswith("  ") and ": ok (" in line]


def kill_after_first_run_then_rerun(cluster, spec: Path, out: Path, data: Path, names: list[str], settled=()):
    """Kill a driver once a run has finished, rerun it to the end; the runs done before the kill."""
    b = start_driver(cluster, spec, out, data, out.parent / "b.log")
    wait_for(lambda: finished(out.parent / "b.log"))
    b.kill()
    b.wait()
    done = sorted(set(settled) | set(finished(out.parent / "b.log")))
    before = {n: hashes(out / n) for n in done}
    assert 1 <= len(done) < len(names)
    c = start_driver(cluster, spec, out, data, out.parent / "c.log")
    assert c.wait(timeout=240) == 0, (out.parent / "c.log").read_text()
    assert {n: hashes(out / n) for n in done} == before  # not one byte of a finished run changed
    summary = {s["run"]: s["status"] for s in json.loads((out / "sweep.json").read_text())["runs"]}
    assert all(summary[n] == "done (earlier)" for n in done) and all(is_done(out / n, False) for n in names)
    return done


def test_a_killed_driver_and_a_rerun_redo_no_finished_run(cluster, data, tmp_path):
    spec, out = tmp_path / "spec.toml", tmp_path / "s"
    spec.write_text(SPEC.replace("[2, 3]", "[2, 3, 4]").replace("train.epochs = 3", "train.epochs = 1")
                    .replace("train.batch_size = 8", "train.batch_size = 64"))  # 3 short runs on 2 CPUs
    kill_after_first_run_then_rerun(cluster, spec, out, data, [*RUNS, "dense-16-32_z4_beta1_seed0"])


@pytest.mark.slow
@pytest.mark.faults
def test_ctrl_c_on_the_driver_then_a_kill_then_a_rerun_give_uninterrupted_runs(cluster, swept, data, tmp_path):
    spec, out = tmp_path / "spec.toml", tmp_path / "s"
    spec.write_text(SPEC.replace("[2, 3]", "[2, 3, 4]"))  # 3 runs on 2 CPUs
    names = [*RUNS, "dense-16-32_z4_beta1_seed0"]
    a = start_driver(cluster, spec, out, data, tmp_path / "a.log")
    wait_for(lambda: any(1 <= epochs(out / n) < 3 for n in names))
    a.send_signal(signal.SIGINT)  # Ctrl-C while a run is between epochs: its task is cancelled
    assert a.wait(timeout=120) == 130, (tmp_path / "a.log").read_text()
    assert not any(trainers(out / n) for n in names)  # the driver waited until its tasks had stopped
    cut = [n for n in names if (out / n / "log.txt").exists() and "interrupted" in (out / n / "log.txt").read_text()]
    assert cut and any(1 <= epochs(out / n) < 3 for n in cut)  # stopped by SIGTERM, its epochs kept
    settled = [n for n in names if is_done(out / n, evaluate=False)]  # A waited for its processes to end
    kill_after_first_run_then_rerun(cluster, spec, out, data, names, settled)
    for n in RUNS:  # interrupted, killed or not: the weights of an uninterrupted run
        assert same_weights(out / n, swept[0] / n)
