"""THE epoch loop: every model family (a VAE, several stacked VAEs, the DDPM) trains through `fit`.

A family hands the loop its step (engine/steps.py: eager, or a replayed CUDA graph) and a few
methods (a `Family` subclass); the loop owns everything that is the same for all: the data order of epoch e,
which depends only on (seed, e), so a resumed run sees the same batches; the progress bar; per-step
records kept in a device tensor and read back every `check_every` steps (one host sync per check, and
the first non-finite step still named exactly); one metrics record per epoch; one crash-safe
checkpoint per epoch and run folder, written where Ctrl-C or SIGTERM cannot cut it in half.
Restoring is the loop's too (`restore`): weights, optimizer, RNG states and history, for one run
folder or for several trained as one model.

Under torchrun (engine/distributed.py) every rank runs this same loop over the same global batches
(the family's step takes its slice); rank 0 alone shows the bar, logs, writes checkpoints and
samples, and the others wait at the barrier that ends each epoch. Alone, `world` is SINGLE and
changes nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from vaelab.engine import checkpoint, distributed
from vaelab.engine.distributed import SINGLE, World
from vaelab.engine.interrupt import Guard
from vaelab.engine.steps import load_optimizer_state
from vaelab.errors import RunError, TrainingDiverged


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch `epoch`: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_sizes(n: int, bs: int, device) -> tuple[int, torch.Tensor]:
    """Steps of an epoch and each step's batch size (the last one may be short), to weight batch means."""
    steps = (n + bs - 1) // bs
    sizes = torch.full((steps,), float(bs), device=device)
    sizes[-1] = n - bs * (steps - 1)
    return steps, sizes


def check_finite(losses: torch.Tensor, epoch: int) -> None:
    """Raise TrainingDiverged naming the first non-finite step of `losses` (steps,) or (steps, models)."""
    bad = ~torch.isfinite(losses.reshape(len(losses), -1)).all(1)
    if bad.any():
        first = int(bad.nonzero()[0])
        value = losses[first].tolist()
        kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "nothing was saved"
        hint = "; continue with `--resume --on-divergence rollback`, or lower --lr" if epoch else "; lower --lr"
        raise TrainingDiverged(f"loss became {value} at epoch {epoch + 1}, step {first + 1}; "
                               f"training stopped, {kept}{hint}")


MAX_ROLLBACKS = 3  # rollbacks of one epoch before the loop gives up and stops


@dataclass
class Divergence:
    """An epoch whose training loss jumped: run k's `loss` above `factor` times its best epoch's (`best`)."""

    run: int
    epoch: int
    loss: float
    best: float
    factor: float

    def describe(self) -> str:
        """One sentence with the numbers."""
        if self.loss != self.loss:
            return f"the training loss of epoch {self.epoch + 1} became NaN or infinite"
        return (f"the training loss of epoch {self.epoch + 1} is {self.loss:.4g}, {self.loss / self.best:.1f}x the "
                f"best epoch's {self.best:.4g} (the limit is {self.factor:g}x)")


def check_divergence(histories: list[list[dict]], records: list[dict], key: str, factor: float,
                     epoch: int) -> Divergence | None:
    """The first run whose epoch loss `records[k][key]` exceeds `factor` times the lowest of its past epochs
    (a robust rule: one bad epoch, however the loss is scaled, and never on the first epoch); None if none did."""
    if factor <= 0:
        return None
    for k, (history, record) in enumerate(zip(histories, records)):
        past = [r[key] for r in history if key in r]
        best = min(past, default=0.0)
        if best > 0 and record[key] > factor * best:
            return Divergence(k, epoch, record[key], best, factor)
    return None


def diverged_error(d: Divergence, run_dir: Path, why: str = "") -> TrainingDiverged:
    """The exit-code-5 error for a divergence that stops training: the numbers and how to go on."""
    kept = f"the checkpoint of epoch {d.epoch} is kept" if d.epoch else "nothing was saved"
    return TrainingDiverged(
        f"{run_dir}: training diverged: {d.describe()}{why}; training stopped, {kept}. Continue it with "
        "`--resume --on-divergence rollback` (back to the last good epoch at half the learning rate), or start "
        "again with a lower --lr")


def restore_rng(state: dict, device: torch.device, world: World = SINGLE) -> None:
    """Put back the RNG states a checkpoint saved (CPU, and CUDA where the run used it; this rank's under DDP)."""
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    distributed.resume_rng(state, world, device)


@dataclass
class Progress:
    """Where training stands: the next epoch, and each run folder's history and training seconds."""

    epoch: int
    histories: list[list[dict]]
    seconds: list[float]

    @classmethod
    def fresh(cls, runs: int) -> "Progress":
        """Nothing trained yet, for `runs` run folders."""
        return cls(0, [[] for _ in range(runs)], [0.0] * runs)


def restore(run_dirs: list[Path], expected: Callable[[int], dict], load: Callable[[int, dict, dict], None],
            opt: torch.optim.Optimizer, device: torch.device,
            optimizer_state: Callable[[list[dict]], dict] = lambda states: states[0],
            world: World = SINGLE) -> Progress:
    """Load each run's last completed epoch: load(k, tensors, state) puts run k's weights back (checked
    against expected(k), a state_dict); optimizer_state merges the runs' optimizer states into `opt`'s."""
    # one process finishes an interrupted save (renames) before every rank reads the files
    distributed.main_first(world, lambda: [checkpoint.recover(run_dir) for run_dir in run_dirs])
    states = []
    for k, run_dir in enumerate(run_dirs):
        state = checkpoint.load_state(run_dir)
        load(k, checkpoint.load_weights(run_dir / checkpoint.WEIGHTS, expected(k)), state)
        states.append(state)
    epochs = {s["epoch"] for s in states}
    if len(epochs) != 1:
        raise RunError(f"the runs stand at different epochs ({sorted(epochs)}); resume them one by one")
    load_optimizer_state(opt, optimizer_state([s["optimizer"] for s in states]))
    restore_rng(states[0], device, world)  # the same in every run trained together
    return Progress(states[0]["epoch"], [list(s["history"]) for s in states],
                    [float(s.get("seconds", 0.0)) for s in states])


def save_epoch(guard: Guard, run_dir: Path, weights: dict, opt_state: dict, history: list, seconds: float,
               epoch: int, epochs: int, device: torch.device, **extra) -> None:
    """Checkpoint the end of `epoch` (0-based) with everything an exact resume needs, and metrics.jsonl."""
    state = {"optimizer": opt_state, "rng_cpu": torch.get_rng_state(), "history": history,
             "seconds": seconds, "finished": epoch + 1 == epochs, **extra}
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    with guard.critical():
        checkpoint.save(run_dir, weights, state, epoch + 1)
        checkpoint.write_history(run_dir, history)


def train_epoch(step, perm: torch.Tensor, batch_size: int, steps_iter, check_every: int = 50,
                epoch: int = 0) -> torch.Tensor:
    """One pass in the order `perm`, step(idx) per batch: (steps, *record) per-step records,
    record[..., 0] the loss (one model: (steps, R); K stacked models: (steps, K, R))."""
    per_step = None
    for i in steps_iter:
        record = step(perm[i * batch_size:(i + 1) * batch_size])
        if per_step is None:
            per_step = torch.zeros(len(steps_iter), *record.shape, device=record.device)
        per_step[i] = record  # a copy on the device: no host sync
        if (i + 1) % check_every == 0 or i == len(steps_iter) - 1:
            check_finite(per_step[: i + 1, ..., 0], epoch)
            if hasattr(steps_iter, "set_postfix"):
                steps_iter.set_postfix(loss=" ".join(f"{v:.4g}" for v in per_step[i, ..., 0].reshape(-1).tolist()))
    return per_step


class Family:
    """What one model family plugs into the loop: subclass it (vae/train.py, vae/stacked.py, diffusion/train.py).

    The loop calls only these: train_mode() before each epoch; step(idx) trains on the batch of training
    indices idx and returns its record (record[..., 0] the loss); records(epoch, train) turns the epoch's
    mean record into each run's metrics (evaluating on the test set); state(k) is run k's (weights, optimizer
    state, extra state) to checkpoint; summary(epoch, records, seconds) is the epoch's log line;
    after_epoch(epoch, per_step, records, seconds) runs on rank 0 after the checkpoint (TensorBoard, sample
    grids).
    """

    desc = ""  # added to the progress bar's label
    check_every = 50  # steps between two host reads of the records (and the NaN check)
    loss_key = "train_loss"  # the key of records() that holds the epoch's training loss (divergence check)
    divergence_factor = 0.0  # an epoch loss above this times the best epoch's is divergence (0: not checked)
    on_divergence = "stop"  # or "rollback" (families that implement rollback())

    def train_mode(self) -> None:
        """Put the networks in training mode before an epoch (e.g. model.train())."""

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """Train on the batch x_train[idx]; its record (record[..., 0] the loss)."""
        raise NotImplementedError

    def records(self, epoch: int, train: torch.Tensor) -> list[dict]:
        """Each run's metrics of `epoch` from the epoch's mean training record."""
        raise NotImplementedError

    def state(self, k: int) -> tuple[dict, dict, dict]:
        """Run k's (weights, optimizer state, extra state) to checkpoint."""
        raise NotImplementedError

    def summary(self, epoch: int, records: list[dict], seconds: float) -> str:
        """The epoch's log line."""
        raise NotImplementedError

    def after_epoch(self, epoch: int, per_step: torch.Tensor, records: list[dict], seconds: float) -> None:
        """Rank 0, after the checkpoint of `epoch` (0-based): logs and pictures."""

    def rollback(self) -> float:
        """Go back to the last checkpoint and halve the learning rate; the new learning-rate scale (relative
        to the config's). Families that cannot (several runs in one model) do not override it."""
        raise NotImplementedError

    def log(self, message: str) -> None:
        """A line for the user (stderr)."""
        print(message, file=sys.stderr)


def fit(family: Family, run_dirs: list[Path], progress: Progress, epochs: int, n: int, batch_size: int,
        seed: int, device: torch.device, world: World = SINGLE) -> list[list[dict]]:
    """Train epochs progress.epoch .. epochs-1 over n training examples; returns each run's history."""
    if progress.epoch >= epochs:
        if world.is_main:
            family.log(f"{', '.join(map(str, run_dirs))}: already trained for {progress.epoch} epochs; nothing to do")
        return progress.histories
    steps, sizes = batch_sizes(n, batch_size, device)
    k, rollbacks, epoch = len(run_dirs), [], progress.epoch
    with Guard() as guard:
        while epoch < epochs:
            t0 = time.perf_counter()
            family.train_mode()
            perm = epoch_order(n, seed, epoch).to(device)
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}{family.desc}", unit="batch",
                       leave=False, disable=None if world.is_main else True, file=sys.stderr)
            try:
                per_step = train_epoch(family.step, perm, batch_size, bar, family.check_every, epoch)
            except TrainingDiverged:  # a NaN or Inf: the extreme divergence, handled the same way when asked
                if family.on_divergence != "rollback":
                    raise
                nan = float("nan")
                rollbacks.append(on_divergence(family, Divergence(0, epoch, nan, nan, nan), run_dirs[0],
                                               len(rollbacks), world))
                continue
            weights = sizes.view(-1, *[1] * (per_step.dim() - 1))  # (steps, 1, ...): each batch by its size
            records = family.records(epoch, (per_step * weights).sum(0) / n)
            jump = check_divergence(progress.histories, records, family.loss_key, family.divergence_factor, epoch)
            if jump is not None:  # nothing of this epoch is saved: the last checkpoint is the last good epoch
                rollbacks.append(on_divergence(family, jump, run_dirs[jump.run], len(rollbacks), world))
                continue
            if rollbacks:  # the epoch that went through after them says so in metrics.jsonl
                records = [{**r, "rollbacks": rollbacks} for r in records]
                rollbacks = []
            elapsed = time.perf_counter() - t0
            rngs = distributed.rng_states(world, device)  # every rank's, for rank 0's checkpoint ({} alone)
            with guard.critical():  # every run's checkpoint of this epoch, or none (then resume one by one)
                for i, run_dir in enumerate(run_dirs):
                    progress.seconds[i] += elapsed / k  # each run's share of the time
                    progress.histories[i].append({"epoch": epoch + 1, **records[i], "epoch_seconds": elapsed / k,
                                                  "seconds": progress.seconds[i]})
                    w, opt_state, extra = family.state(i)
                    if world.is_main:
                        save_epoch(guard, run_dir, w, opt_state, progress.histories[i], progress.seconds[i], epoch,
                                   epochs, device, **extra, **rngs)
            progress.epoch = epoch + 1
            if world.is_main:
                family.log(family.summary(epoch, records, elapsed))
                family.after_epoch(epoch, per_step, records, elapsed)
            distributed.barrier(world)  # the checkpoint and samples are on disk before any rank goes on
            epoch += 1
    return progress.histories


def on_divergence(family: Family, jump: Divergence, run_dir: Path, earlier: int, world: World = SINGLE) -> dict:
    """Stop (TrainingDiverged), or roll back to the last checkpoint at half the learning rate and return the
    event for metrics.jsonl. Stops anyway after MAX_ROLLBACKS rollbacks of one epoch, or where the family
    cannot roll back."""
    if family.on_divergence != "rollback":
        raise diverged_error(jump, run_dir)
    if jump.epoch == 0:
        raise diverged_error(jump, run_dir, " (in the first epoch: no checkpoint to go back to)")
    if earlier >= MAX_ROLLBACKS:
        raise diverged_error(jump, run_dir, f", still after {earlier} rollbacks")
    try:
        scale = family.rollback()
    except NotImplementedError:
        raise diverged_error(jump, run_dir, " (runs trained together cannot roll back: train it alone)") from None
    if world.is_main:
        family.log(f"{run_dir}: {jump.describe()}: back to the checkpoint of epoch {jump.epoch}, learning rate "
                   f"x{scale:g} of the config's")
    finite = jump.loss == jump.loss
    return {"loss": jump.loss if finite else None, "best": jump.best if finite else None, "lr_scale": scale}
