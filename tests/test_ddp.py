"""One DDPM run across 2 processes (DDP over gloo on the CPU): the same training as one process on the
whole batch, a rank killed mid-run, and `vaelab ddpm train --nproc 2` end to end.

Every process is started with a deadline and killed with its group when it passes it: a test here fails,
it never hangs.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.multiprocessing as mp

from conftest import write_mnist
import vaelab.diffusion.train as dt
from vaelab.cli.main import main
from vaelab.data.images import load
from vaelab.diffusion.config import profile_config
from vaelab.engine import checkpoint, distributed
from vaelab.engine.loop import epoch_order
from vaelab.engine.steps import make_optimizer, set_lr
from vaelab.errors import VaelabError

DEADLINE_S = 120  # per process tree; a tiny run takes a few seconds even on a loaded 2-core machine
# 46 images in batches of 15: shards of 8 and 7 images, then a last batch of 1 that leaves rank 1 empty
TINY = {"model.widths": "4-8", "schedule.timesteps": 50, "train.batch_size": 15, "train.epochs": 2,
        "train.warmup_steps": 2, "train.device": "cpu"}
CLI_TINY = ["--profile", "quick", "--widths", "4-8", "--timesteps", "50", "--batch-size", "24", "--device", "cpu"]


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, size: int, port: int, data_dir: str, out: str) -> None:
    """One spawned rank: train the TINY DDPM with the real train_ddpm, then save its weights and EMA."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    built = []
    build, ema_class = dt.build_unet, dt.EMA
    dt.build_unet = lambda cfg: built.append(build(cfg)) or built[-1]  # catch this rank's model and EMA
    dt.EMA = lambda model, decay: built.append(ema_class(model, decay)) or built[-1]
    with distributed.joined(torch.device("cpu")) as (world, device):
        history = dt.train_ddpm(Path(out), profile_config("quick", TINY), load("mnist", data_dir), world=world,
                                device=device, check_every=1, log=lambda m: None)
    model, ema = built
    torch.save({"model": model.state_dict(), "ema": ema.shadow, "history": history}, f"{out}/rank{rank}.pt")


def one_process(data, cfg) -> tuple[dict, dict, list[float]]:
    """The reference: one process, the whole batch per step, each image's t and eps drawn as its rank draws
    them; (weights, EMA weights, per-epoch mean loss)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = dt.build_unet(cfg)
    ema = dt.EMA(model, tc.ema_decay)
    opt = make_optimizer(model.parameters(), tc.lr, lr_tensor=True)
    schedule = dt.build_schedule(cfg)
    streams = [torch.Generator().manual_seed(s) for s in distributed.stream_seeds(2)]
    n, losses = len(data.train_x), []
    for epoch in range(tc.epochs):
        perm, total = epoch_order(n, tc.seed, epoch), 0.0
        for i in range(0, n, tc.batch_size):
            idx = perm[i:i + tc.batch_size]
            parts = list(zip(idx.tensor_split(2), streams))  # each rank's slice, with that rank's stream
            t = torch.cat([torch.randint(0, schedule.T, (len(p),), generator=g) for p, g in parts])
            eps = torch.cat([torch.randn((len(p), 1, 28, 28), generator=g) for p, g in parts])
            x0 = dt.to_signed(data.train_x[idx])
            set_lr(opt, tc.lr * min(1.0, (ema.updates + 1) / max(1, tc.warmup_steps)))
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(schedule.add_noise(x0, t, eps), t), eps)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            ema.update(model)
            total += loss.item() * len(idx)
        losses.append(total / n)
    return model.state_dict(), ema.shadow, losses


def join(ctx, deadline: float) -> None:
    """Wait for spawned processes until `deadline` (time.time()), killing them when it passes."""
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-rank run did not finish in time (a hang)")


def test_two_ranks_train_as_one_process_on_the_whole_batch(tmp_path):
    """k = 8 steps (2 epochs, an uneven split and an empty slice): both ranks hold identical weights and EMA,
    equal to one process on the concatenated batch up to float32 rounding (atol 1e-6, rtol 1e-5; the largest
    difference measured is 1.1e-7; a loss normalised per slice instead of per batch fails it)."""
    data_dir = write_mnist(tmp_path / "mnist", n_train=46, n_test=16)
    out = tmp_path / "run"
    out.mkdir()
    ctx = mp.start_processes(rank_main, (2, free_port(), str(data_dir), str(out)), nprocs=2, join=False,
                             start_method="spawn")
    join(ctx, time.time() + DEADLINE_S)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "ema"):
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), f"{part} differs between ranks"
    weights, ema, losses = one_process(load("mnist", data_dir), profile_config("quick", TINY))
    assert r0["history"][-1]["steps"] == 8
    for name, ref in (("model", weights), ("ema", ema)):
        for k, v in ref.items():
            torch.testing.assert_close(r0[name][k], v, atol=1e-6, rtol=1e-5, msg=f"{name}.{k}")
    assert [h["train_mse"] for h in r0["history"]] == pytest.approx(losses, rel=1e-5)
    saved = checkpoint.load_weights(out / checkpoint.WEIGHTS)  # rank 0 wrote the checkpoint
    assert all(torch.equal(saved[k], r0["model"][k]) for k in r0["model"])


def test_shards_cover_the_batch_and_streams_differ():
    world = [distributed.World(r, 3) for r in range(3)]
    for b in (7, 2, 1):  # uneven, and fewer images than ranks
        idx = torch.arange(100, 100 + b)
        parts = [distributed.shard(idx, w) for w in world]
        assert torch.equal(torch.cat(parts), idx) and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert distributed.shard(idx, distributed.SINGLE) is idx  # one process: the batch itself
    torch.manual_seed(0)
    seeds = distributed.stream_seeds(4)
    torch.manual_seed(0)
    assert seeds == distributed.stream_seeds(4) and len(set(seeds)) == 4  # reproducible, one per rank


def test_more_processes_than_gpus_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(VaelabError, match="need 2 GPUs"):
        distributed.check_gpus(torch.device("cuda"), 2)
    assert main(["ddpm", "train", "--nproc", "2", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "use --nproc 1 or --device cpu" in capsys.readouterr().err and not (tmp_path / "run").exists()


def run(args: list, env: dict) -> subprocess.Popen:
    """Start `python ARGS` in its own process group (so a deadline can kill the whole tree)."""
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def finish(p: subprocess.Popen, timeout: float = DEADLINE_S) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of p; its whole process group killed and the test failed past `timeout`."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"no exit after {timeout} s (a hang):\n{err[-2000:]}")
    return p.returncode, out, err


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """Data, an environment for subprocesses, and a 3-epoch 2-rank run through `vaelab ddpm train --nproc 2`."""
    root = tmp_path_factory.mktemp("ddp")
    data_dir = write_mnist(root / "mnist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAELAB_THREADS": "1", "VAELAB_CACHE": str(root / "cache")}
    args = ["-m", "vaelab.cli", "ddpm", "train", *CLI_TINY, "--epochs", "3", "--data-dir", data_dir]
    result = finish(run([*args, "--nproc", "2", "--out", root / "whole"], env))
    return root, env, args, result


def weights_equal(a, b) -> bool:
    """Whether two run folders hold bit-identical weights (raw and EMA)."""
    wa, wb = (checkpoint.load_weights(d / checkpoint.WEIGHTS) for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_nproc_trains_a_complete_run(cli_env):
    root, _, _, (code, out, err) = cli_env
    assert code == 0, err[-3000:]
    run_dir = root / "whole"
    assert {"config.json", "metrics.jsonl", "model.safetensors", "state.pt", "samples.png"} <= {
        p.name for p in run_dir.iterdir()}
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["steps"] for h in history] == [11, 22, 33]  # 256 images in global batches of 24 (the config's)
    assert all(0 < h["train_mse"] < 2 and "test_mse" in h for h in history)
    state = checkpoint.load_state(run_dir)
    assert state["epoch"] == 3 and len(state["rng_ranks"]) == 2  # every rank's RNG states, for --resume
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])  # own noise per rank
    assert out.count("done:") == 1 and err.count("epoch 3/3") == 1  # rank 0 alone speaks
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.faults
def test_a_killed_rank_fails_the_job_and_resume_finishes_it_exactly(cli_env):
    """Plain torchrun; SIGKILL rank 1 after the first checkpoint: the job exits (no hang), the checkpoint is
    whole, and --resume (--nproc 2) ends with the same bits as the uninterrupted run."""
    root, env, args, (code, _, err) = cli_env
    assert code == 0, err[-3000:]
    run_dir, tag = root / "killed", str(uuid.uuid4())
    p = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args, "--out", run_dir],
            {**env, "VAELAB_TEST_TAG": tag})
    deadline = time.time() + DEADLINE_S
    while not (run_dir / checkpoint.STATE).exists():
        assert p.poll() is None and time.time() < deadline, "the run ended or stalled before its first checkpoint"
        time.sleep(0.02)
    time.sleep(0.2)  # into epoch 2 (or its sample grid)
    os.kill(rank_pid(tag, 1), signal.SIGKILL)
    code, _, err = finish(p, timeout=60)
    assert code != 0, "the job must fail when one of its ranks is killed"
    assert rank_pids(tag) == {}, "a rank outlived the job"
    state = checkpoint.load_state(run_dir)
    assert 1 <= state["epoch"] < 3, f"the kill landed after the end (epoch {state['epoch']}): inconclusive"
    assert checkpoint.weights_epoch(run_dir / checkpoint.WEIGHTS) in (state["epoch"], state["epoch"] - 1)
    checkpoint.recover(run_dir)  # what --resume does first: the pair agrees afterwards
    assert checkpoint.weights_epoch(run_dir / checkpoint.WEIGHTS) == state["epoch"]
    code, _, err = finish(run([*args, "--nproc", "2", "--resume", "--out", run_dir], env))
    assert code == 0, err[-3000:]
    assert weights_equal(run_dir, root / "whole")
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(run_dir) == strip(root / "whole")


def rank_pids(tag: str) -> dict[int, int]:
    """rank -> pid of the live processes whose environment holds VAELAB_TEST_TAG=tag and a RANK."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if env.get("VAELAB_TEST_TAG") == tag and "RANK" in env and "State:\tZ" not in status:
            found[int(env["RANK"])] = int(pid)
    return found


def rank_pid(tag: str, rank: int) -> int:
    """The pid of rank `rank` of the run tagged `tag`."""
    pids = rank_pids(tag)
    assert rank in pids, f"rank {rank} not found among {pids}"
    return pids[rank]
