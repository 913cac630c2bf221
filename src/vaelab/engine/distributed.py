"""One training run across several processes: torch.distributed (DDP), launched by torchrun.

torchrun starts N copies of the same command and tells each its place through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init` reads them and joins the process group:
gloo on the CPU, NCCL on CUDA with one GPU per process (cuda:LOCAL_RANK). Without them, or with
WORLD_SIZE=1, the world is this one process (`SINGLE`) and every function here is a no-op: one-process
training is bit for bit what it was.

The choices a DDP run makes, in one place:
- Batches: every rank walks the same seeded permutation in the same global batches of the config's
  size; `shard` gives rank r its contiguous part (sizes differ by at most one; a rank gets an empty
  part when the epoch's last batch has fewer images than there are ranks).
- Loss: DDP averages gradients over ranks, so each rank minimises world size x its share of the whole
  batch's mean (`mean_share`): the average is exactly the gradient of the batch mean, uneven split or not.
- Noise: each rank draws its timesteps and noise from its own stream, seeded from a number drawn from
  the shared RNG state after the weights are built and the rank (`split_rng`): different on every
  rank, the same again for the same seed and world size. A checkpoint keeps every rank's RNG states,
  so `--resume` with the same number of processes continues exactly.
- Rank 0 alone writes checkpoints, metrics and samples; the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from vaelab.errors import RunError, VaelabError

# how long a rank waits for the others at a collective (rank 0 draws a sample grid after each epoch while
# the others wait at the barrier); VAELAB_DDP_TIMEOUT seconds overrides it
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank (0 .. size-1), number of processes, rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes and speaks."""
        return self.rank == 0


SINGLE = World()


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_env() -> World:
    """The World that torchrun's environment variables describe (SINGLE without them)."""
    if not launched():
        return SINGLE
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def check_gpus(device: torch.device, nproc: int) -> None:
    """Refuse a CUDA run of `nproc` processes on a machine with fewer GPUs (DDP uses one GPU per process)."""
    if device.type != "cuda" or nproc == 1:
        return
    if device.index is not None:
        raise VaelabError(f"a run of {nproc} processes uses one GPU each (cuda:0 .. cuda:{nproc - 1}); "
                          f"use --device cuda, not {device}")
    found = torch.cuda.device_count()
    if found < nproc:
        raise VaelabError(f"{nproc} processes on CUDA need {nproc} GPUs (one each), but PyTorch sees {found}; "
                          f"use --nproc {found} or --device cpu")


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) and return (world, this rank's device)."""
    world = from_env()
    if world.size == 1:
        return SINGLE, device
    if device.type == "cuda":
        check_gpus(device, int(os.environ.get("LOCAL_WORLD_SIZE", world.local_rank + 1)))
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)  # NCCL and the object collectives use the current device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=collective_timeout())
    return world, device


def collective_timeout() -> datetime.timedelta:
    """How long a rank waits at a collective: VAELAB_DDP_TIMEOUT seconds, else DEFAULT_TIMEOUT_S."""
    text = os.environ.get("VAELAB_DDP_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise VaelabError(f"VAELAB_DDP_TIMEOUT must be a positive number of seconds (got {text!r})")
    return datetime.timedelta(seconds=seconds)


def teardown(world: World) -> None:
    """Leave the process group (nothing to do alone)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """init ... teardown around a run; a collective that fails because another rank died is one RunError."""
    world, device = init(device)
    try:
        yield world, device
    except dist.DistError as e:
        raise RunError(f"rank {world.rank} stops: another process of this run failed "
                       f"({str(e).splitlines()[0][:160]}); continue with --resume") from None
    finally:
        teardown(world)


def barrier(world: World) -> None:
    """Wait until every rank gets here."""
    if world.size > 1:
        dist.barrier()


def main_first(world: World, fn: Callable[[], object]) -> None:
    """Run fn() on rank 0 while the others wait; if it fails, every rank stops (none is left waiting)."""
    if world.size == 1:
        fn()
        return
    error: Exception | None = None
    if world.is_main:
        try:
            fn()
        except Exception as e:  # told to the other ranks below, then raised here
            error = e
    message = [None if error is None else str(error)]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise RunError(f"rank {world.rank} stops: rank 0 failed ({message[0]})")


def shard(idx: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous part of a global batch of indices (the whole batch alone)."""
    if world.size == 1:
        return idx
    return idx.tensor_split(world.size)[world.rank]  # (B,) -> (B // size or one more, possibly 0,)


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of `t` over all ranks, in place (t itself alone)."""
    if world.size > 1:
        dist.all_reduce(t)
    return t


def mean_share(total: torch.Tensor, count: int, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, record) of a batch mean split across ranks: `total` sums this rank's terms, `count` is the
    whole batch's number of terms. DDP averages gradients over ranks, hence the factor world.size; the
    record (1,) is the whole batch's mean, the same on every rank."""
    share = total / count
    return share * world.size, all_sum(share.detach().clone().reshape(1), world)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model under DistributedDataParallel (gradients averaged in backward); the model itself alone."""
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def stream_seeds(size: int) -> list[int]:
    """The noise seed of each of `size` ranks: one draw from the current RNG state (the same on every
    rank), mixed with the rank (splitmix64), so neighbouring ranks get unrelated streams."""
    base = int(torch.randint(0, 2 ** 62, (1,)))
    seeds = []
    for rank in range(size):
        z = (base + (rank + 1) * 0x9E3779B97F4A7C15) % 2 ** 64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2 ** 64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2 ** 64
        seeds.append((z ^ (z >> 31)) % 2 ** 63)
    return seeds


def split_rng(world: World) -> None:
    """Give this rank its own noise stream (CPU and CUDA), derived from the shared RNG state and the rank."""
    if world.size > 1:
        torch.manual_seed(stream_seeds(world.size)[world.rank])


def rng_states(world: World, device: torch.device) -> dict:
    """{"rng_ranks": every rank's RNG states} on rank 0 for its checkpoint ({} alone; every rank must call it)."""
    if world.size == 1:
        return {}
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = [None] * world.size if world.is_main else None
    dist.gather_object(mine, states, dst=0)
    return {"rng_ranks": states} if world.is_main else {}


def resume_rng(state: dict, world: World, device: torch.device) -> None:
    """After the shared RNG state is restored: this rank's own states from a checkpoint of as many ranks,
    else (another number of processes) streams derived from the restored state, and a note that the run
    continues correctly, though not bit for bit."""
    saved = state.get("rng_ranks") or [None]  # a one-process checkpoint: its shared state is its only one
    if len(saved) != world.size:
        if world.is_main:
            print(f"vaelab: this run was saved by {len(saved)} process{'es' * (len(saved) > 1)} and continues with "
                  f"{world.size}: its noise is drawn differently from here on, so it goes on correctly but not "
                  "bit for bit", file=sys.stderr)
        split_rng(world)
    elif world.size > 1:
        torch.set_rng_state(saved[world.rank]["cpu"])
        if device.type == "cuda" and "cuda" in saved[world.rank]:
            torch.cuda.set_rng_state(saved[world.rank]["cuda"], device)


def launch(nproc: int, args: list[str], threads: int | None = None) -> int:
    """Run `python ARGS` as `nproc` ranks on this machine, as `torchrun --standalone` does; the exit code
    of the first rank that failed (0 when all succeeded). Each rank gets `threads` CPU threads."""
    if threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # the ranks inherit this process's environment
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"vaelab-{uuid.uuid4()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    quiet_launcher()
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:  # killed by a signal: say which, exit as a shell would
            name = signal.Signals(-failure.exitcode).name
            print(f"vaelab: error: rank {rank} was killed by {name}; the last completed epoch is saved, "
                  "continue with --resume", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode
    except SignalException as e:  # Ctrl-C or SIGTERM here: the agent passed it on, and each rank said so
        return 128 + int(e.sigval)
    return 0


def quiet_launcher() -> None:
    """Silence the launcher's own log lines (each of its loggers has its own level): the ranks and `launch`
    say what happened, in vaelab's words."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
