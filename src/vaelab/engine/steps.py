"""One optimisation step as a callable, run eagerly or, on CUDA, replayed from a captured CUDA graph.

A VAE step on 28x28 images is tens of tiny kernels: on a GPU the time goes to launching them from Python
(milliseconds a step), not to the arithmetic. Capturing the whole step (gather of
the batch, forward, loss, backward, Adam) once and replaying it costs one launch per step. The first
steps run eagerly on a side stream (capture needs warmed-up kernels and allocators); they are real
training steps, so the trajectory is the eager one step for step. Only full batches are replayed
(a graph has fixed shapes); the short last batch of an epoch runs eagerly on the same weights.
Adam must then be `capturable` (its step count on the device); its numbers are unchanged.

`VAELAB_CUDA_GRAPHS=0` turns graphs off (the eager loop, e.g. to compare).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

# compute(idx) -> (scalar to minimise, record): the batch's loss and what the loop keeps of it
Compute = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def graphs_wanted(device: torch.device) -> bool:
    """CUDA graphs on CUDA devices, unless VAELAB_CUDA_GRAPHS=0."""
    return device.type == "cuda" and os.environ.get("VAELAB_CUDA_GRAPHS", "1") != "0"


def make_optimizer(params, lr: float, capturable: bool = False, lr_tensor: bool = False) -> torch.optim.Optimizer:
    """Adam, fused where PyTorch has a fused kernel (about 4x cheaper a step on CPU than the default);
    `capturable` (its step count on the device) when a CUDA graph will hold its update. With
    `lr_tensor` (and capturable) the learning rate is a device tensor, so a schedule can change it
    between replays of a graph (set_lr); a float would be frozen into the graph at capture."""
    params = list(params)
    if capturable and lr_tensor:
        lr = torch.tensor(lr, device=params[0].device)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
    except (RuntimeError, TypeError):  # fused unsupported for this device or build
        return torch.optim.Adam(params, lr=lr, capturable=capturable)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place for a tensor lr (graph-safe), else as a float."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict, keeping this optimizer's own `capturable`, `fused` and lr object (a run trained
    with CUDA graphs can be resumed on the CPU, and the other way round; the lr is the config's, or a
    schedule's that sets it every step)."""
    own = [{k: g.get(k) for k in ("capturable", "fused", "lr")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, flags in zip(opt.param_groups, own):
        group.update(flags)


def eager(compute: Compute, opt: torch.optim.Optimizer,
          clip: Callable[[], None] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain step: zero grads, forward and loss, backward, clip() if given, Adam; returns the record."""
    def step(idx: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss, record = compute(idx)
        loss.backward()
        if clip is not None:
            clip()
        opt.step()
        return record.detach()
    return step


class GraphedStep:
    """step(idx): eager for the first `warmup` full batches, then a CUDA graph of the eager step, replayed.

    Batches of another size than the captured one run eagerly. The returned record lives in the graph's
    static memory: copy it (per_step[i] = step(idx)) before the next call.
    """

    def __init__(self, compute: Compute, opt: torch.optim.Optimizer, batch_size: int, warmup: int = 3,
                 clip: Callable[[], None] | None = None):
        self.step, self.batch_size, self.warmup = eager(compute, opt, clip), batch_size, warmup
        self.opt, self.calls, self.graph = opt, 0, None

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if len(idx) != self.batch_size:
            return self.step(idx)
        self.calls += 1
        if self.calls <= self.warmup:  # real steps, on a side stream as capture requires
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                record = self.step(idx)
            torch.cuda.current_stream().wait_stream(side)
            return record
        if self.graph is None:
            self.static_idx = idx.clone()
            self.graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):  # records, runs nothing: the replay below is this step
                self.static_record = self.step(self.static_idx)
        self.static_idx.copy_(idx)
        self.graph.replay()
        return self.static_record


def step_function(compute: Compute, opt: torch.optim.Optimizer, device: torch.device, batch_size: int,
                  graphs: bool | None = None, clip: Callable[[], None] | None = None,
                  before: Callable[[], None] | None = None, after: Callable[[], None] | None = None):
    """The fastest faithful step for `device`: graphed on CUDA (unless turned off), else eager.

    clip() runs inside the step, between backward and Adam (captured in the graph: device work only);
    before() and after() run outside it, around every step (a learning-rate schedule that must change
    between replays, an EMA update whose decay changes with the step count).
    """
    graphs = graphs_wanted(device) if graphs is None else graphs
    core = GraphedStep(compute, opt, batch_size, clip=clip) if graphs else eager(compute, opt, clip)
    if before is None and after is None:
        return core

    def step(idx: torch.Tensor) -> torch.Tensor:
        if before is not None:
            before()
        record = core(idx)
        if after is not None:
            after()
        return record
    return step
