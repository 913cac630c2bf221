"""Several VAEs that differ only in beta, trained together: one vmapped step for all of them.

The beta study trains one architecture five times on the same batches with the same seed. Stacking
the five models' parameters on a leading axis and running forward/backward once with torch.func.vmap
turns five small steps into one wide one: on a GPU that removes most kernel-launch and Python cost
(benchmarks/gpu.sh); on CPU, where the models already keep the cores busy, separate processes
(`vaelab sweep --jobs`) do as well, so the sweep runner stacks only on CUDA unless told to.

Equivalence: every model starts from the weights of `torch.manual_seed(seed)`, sees the same batches
and, with randomness="same", the same reparameterisation noise, and Adam is elementwise; so model k
follows the run that `vaelab train` would give it alone (equal up to float rounding; tested). Each
model's checkpoint is an ordinary run folder: `vaelab train --resume` can continue any of them alone.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from vaelab.config import to_dict
from vaelab.data.images import Images
from vaelab.engine.lock import run_lock
from vaelab.engine.loop import Family, Progress, fit, restore
from vaelab.engine.runs import pick_device
from vaelab.engine.steps import Compute, graphs_wanted, make_optimizer, step_function
from vaelab.errors import VaelabError
from vaelab.vae.config import VAEConfig
from vaelab.vae.loss import stacked_elbo_terms
from vaelab.vae.networks import VAE, build_vae
from vaelab.vae.tensorboard import VAEBoards
from vaelab.vae.train import batch_images, epoch_record, test_images


class StackedVAEs(nn.Module):
    """K VAEs of one architecture as one module: parameters (K, ...) and a vmapped forward."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, _ = stack_module_state(models)  # the report's VAEs have no buffers
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(p) for p in params.values())
        self._base = [copy.deepcopy(models[0]).to("meta")]  # a list: not registered as a submodule
        self.k = len(models)

    def forward(self, x: torch.Tensor):
        """x (B, 1, 28, 28) -> logits (K, B, 1, 28, 28), mu and logvar (K, B, D)."""
        def one(params, xb):
            out = functional_call(self._base[0], dict(zip(self.names, params)), (xb,))
            return out.logits, out.mu, out.logvar
        return vmap(one, in_dims=(0, None), randomness="same")(tuple(self.stacked), x)

    def weights(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's state_dict (the names and shapes of a single VAE)."""
        return {n: p[k].detach().clone() for n, p in zip(self.names, self.stacked)}

    def load(self, k: int, weights: dict[str, torch.Tensor]) -> None:
        """Put a single VAE's weights into slot k."""
        with torch.no_grad():
            for n, p in zip(self.names, self.stacked):
                p[k].copy_(weights[n])


def split_optimizer_state(sd: dict, k: int) -> dict:
    """The Adam state of model k alone, in the layout a single model's optimizer loads."""
    state = {i: {key: (v.clone() if key == "step" else v[k].clone()) for key, v in s.items()}
             for i, s in sd["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def stack_optimizer_states(sds: list[dict]) -> dict:
    """The inverse of split_optimizer_state: K single-model Adam states -> one stacked state."""
    first = sds[0]
    state = {i: {key: (v if key == "step" else torch.stack([sd["state"][i][key] for sd in sds]))
                 for key, v in s.items()} for i, s in first["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(first["param_groups"])}


def check_group(cfgs: list[VAEConfig]) -> None:
    """VaelabError unless the configs are the same but for train.beta (what stacking assumes)."""
    def without_beta(c):
        d = to_dict(c)
        d["train"].pop("beta")
        return d
    if len(cfgs) < 1 or any(without_beta(c) != without_beta(cfgs[0]) for c in cfgs[1:]):
        raise VaelabError("runs trained together must share every setting but train.beta")


def _forward(stacked: StackedVAEs, x: torch.Tensor, bf16: bool = False):
    """Stacked forward (under bf16 autocast if asked) -> float32 logits, mu, logvar for the loss."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16, cache_enabled=False):
        logits, mu, logvar = stacked(x)
    return logits.float(), mu.float(), logvar.float()


@torch.no_grad()
def stacked_elbo_on(stacked: StackedVAEs, x: torch.Tensor, betas: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """train.elbo_on for every model: (K, 3) per-image loss, recon, kl over `x` (one z per image)."""
    sums = torch.zeros(stacked.k, 3, device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        logits, mu, logvar = _forward(stacked, xb)
        t = stacked_elbo_terms(logits, xb, mu, logvar, betas)
        sums += torch.stack([t.loss, t.recon, t.kl], 1).double() * len(xb)
    return sums / len(x)


def stacked_compute(stacked: StackedVAEs, x_train: torch.Tensor, tc, betas: torch.Tensor) -> Compute:
    """train.vae_compute for K models: (sum of the K losses, record (K, 3) of loss, recon, kl)."""
    def compute(idx: torch.Tensor):
        x = batch_images(x_train, idx, tc.binarize)  # (B, 1, 28, 28)
        logits, mu, logvar = _forward(stacked, x, tc.precision == "bf16")  # (K, B, ...)
        terms = stacked_elbo_terms(logits, x, mu, logvar, betas)  # each (K,)
        # the models share no parameter, so the sum's gradient is each model's own
        return terms.loss.sum(), torch.stack([terms.loss.detach(), terms.recon.detach(), terms.kl.detach()], 1)
    return compute


class StackedFamily(Family):
    """K VAE runs that differ only in beta, trained as one stacked model (one vmapped step for all)."""

    def __init__(self, run_dirs: list[Path], cfgs: list[VAEConfig], data: Images, resume: bool,
                 device: torch.device, check_every: int = 50, log=None, tensorboard: bool = False):
        self.cfgs, self.tc, self.k, self.check_every = cfgs, cfgs[0].train, len(cfgs), check_every
        self.desc = f" ({self.k} models)"
        self.divergence_factor, self.on_divergence = self.tc.divergence_factor, self.tc.on_divergence  # no rollback
        if log is not None:
            self.log = log
        models = []
        for _ in cfgs:  # the same seed for each: the weights a lone `vaelab train` run starts from
            torch.manual_seed(self.tc.seed)
            models.append(build_vae(cfgs[0].model.family, cfgs[0].model.arch, cfgs[0].model.latent_dim))
        self.stacked = StackedVAEs(models).to(device)
        self.betas = torch.tensor([c.train.beta for c in cfgs], device=device)
        self.opt = make_optimizer(self.stacked.parameters(), self.tc.lr, capturable=graphs_wanted(device))
        self.progress = (restore(run_dirs, self.stacked.weights, lambda i, w, s: self.stacked.load(i, w), self.opt,
                                 device, stack_optimizer_states) if resume else Progress.fresh(self.k))
        self.x_train = data.train_x.to(device)  # (N, 1, 28, 28) uint8
        self.x_test = test_images(data.test_x.to(device), self.tc.binarize)
        self.shell = copy.deepcopy(models[0]).to(device)  # a copy, not build_vae: building would draw from the RNG
        self.boards = (VAEBoards(run_dirs, cfgs, len(self.x_train), self.progress.epoch, self.model_of, self.x_test)
                       if tensorboard else None)
        self._step = step_function(stacked_compute(self.stacked, self.x_train, self.tc, self.betas), self.opt,
                                   device, self.tc.batch_size)
        self._opt_sd = None

    def model_of(self, i: int) -> VAE:
        """Run i alone (its TensorBoard images)."""
        self.shell.load_state_dict(self.stacked.weights(i))
        return self.shell.eval()

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step of every model on x_train[idx]; record (K, 3)."""
        return self._step(idx)

    def records(self, epoch: int, train: torch.Tensor) -> list[dict]:
        """Each run's training means (train: (K, 3)) and test -ELBO."""
        test = stacked_elbo_on(self.stacked, self.x_test, self.betas).tolist()  # (K, 3)
        return [{**epoch_record(tr, {"loss": tl, "neg_elbo": r + kl, "recon": r, "kl": kl}), "trained_with": self.k}
                for tr, (tl, r, kl) in zip(train.tolist(), test)]

    def state(self, i: int) -> tuple[dict, dict, dict]:
        """Run i's weights and its slice of the stacked optimizer's state."""
        if i == 0:  # one state_dict of the stacked optimizer per epoch, sliced for each run
            self._opt_sd = self.opt.state_dict()
        return self.stacked.weights(i), split_optimizer_state(self._opt_sd, i), {}

    def summary(self, epoch: int, recs: list[dict], seconds: float) -> str:
        """epoch, seconds, each beta's test -ELBO."""
        return (f"epoch {epoch + 1}/{self.tc.epochs}  {self.k} models together, {seconds:.1f} s; test -ELBO " +
                ", ".join(f"beta {c.train.beta:g}: {r['test_neg_elbo']:.2f}" for c, r in zip(self.cfgs, recs)))

    def after_epoch(self, epoch: int, per_step: torch.Tensor, recs: list[dict], seconds: float) -> None:
        """TensorBoard, when asked for."""
        if self.boards is not None:
            self.boards.on_epoch(epoch, per_step, recs, seconds)


def train_stacked(run_dirs: list[Path], cfgs: list[VAEConfig], data: Images, resume: bool = False,
                  check_every: int = 50, log=None, tensorboard: bool = False) -> list[list[dict]]:
    """Train (or resume) K runs that differ only in beta, together; returns each run's history."""
    check_group(cfgs)
    tc = cfgs[0].train
    device = pick_device(tc.device)
    with run_lock(*run_dirs):
        family = StackedFamily(run_dirs, cfgs, data, resume, device, check_every, log, tensorboard)
        try:
            return fit(family, run_dirs, family.progress, tc.epochs, len(family.x_train), tc.batch_size, tc.seed,
                       device)
        finally:
            if family.boards:
                family.boards.close()
