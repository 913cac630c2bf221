"""What `vaelab.load` returns: a trained VAE or DDPM as an object, tensors in and tensors out.

Images are float tensors (N, 1, 28, 28) with intensities in [0, 1] on the CPU; inputs may also be
(28, 28), (N, 28, 28) or (N, 784), uint8 or float, torch or NumPy. Nothing here draws a figure.
"""

from __future__ import annotations


import numpy as np
import torch

from vaelab.config import to_dict
from vaelab.diffusion.invert import ddim_invert
from vaelab.diffusion.sample import eps_model, generate, sample_loop
from vaelab.diffusion.run import DDPMRun
from vaelab.errors import VaelabError
from vaelab.metrics.features import slerp
from vaelab.engine.runs import read_metrics
from vaelab.vae.sample import vae_samples
from vaelab.nn import count_parameters
from vaelab.vae.run import VAERun


def as_images(x) -> torch.Tensor:
    """Images as float32 (N, 1, 28, 28) in [0, 1] from (28, 28), (N, 28, 28), (N, 784) or (N, 1, 28, 28) input."""
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.dim() == 2 and x.shape == (28, 28):
        x = x[None]
    if x.dim() == 2 and x.shape[1] == 784:
        x = x.view(-1, 28, 28)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise VaelabError(f"images must be (N, 1, 28, 28), (N, 28, 28) or (N, 784); got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise VaelabError("image intensities must be finite and in [0, 1] (or uint8 0..255)")
    return x


class RunModel:
    """What every opened run shares: its folder, device, network, config, history and metrics."""

    def __init__(self, run):
        self.run, self.path, self.device = run, run.path, run.device
        self.network = run.model  # the nn.Module itself, for those who want it

    @property
    def config(self) -> dict:
        """The run's config (as in its config.json)."""
        return to_dict(self.run.cfg)

    @property
    def history(self) -> list[dict]:
        """One record per trained epoch (loss, test -ELBO, seconds...)."""
        return self.run.history

    @property
    def metrics(self) -> dict | None:
        """metrics.json of `vaelab evaluate` (or vaelab.evaluate), None if not evaluated yet."""
        return read_metrics(self.path, required=False)


class VAEModel(RunModel):
    """A trained VAE: encode, decode, sample, reconstruct, interpolate; its config, history and metrics."""

    kind = "vae"

    def __init__(self, run: VAERun):
        super().__init__(run)

    def __repr__(self) -> str:
        m = self.run.cfg.model
        return (f"VAEModel({m.family} {m.arch}, latent {m.latent_dim}, beta {self.run.cfg.train.beta:g}, "
                f"{len(self.history)} epochs, {count_parameters(self.network):,} parameters, {self.path})")

    @property
    def latent_dim(self) -> int:
        """The size D of z."""
        return self.run.cfg.model.latent_dim

    @torch.no_grad()
    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, logvar), each (N, D), of images x."""
        mu, logvar = self.network.encode(as_images(x).to(self.device))
        return mu.cpu(), logvar.cpu()

    @torch.no_grad()
    def decode(self, z) -> torch.Tensor:
        """Pixel means (N, 1, 28, 28) in [0, 1] of latents z (N, D) or (D,)."""
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if z.dim() == 1 else z
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise VaelabError(f"z must be (N, {self.latent_dim}) for this VAE; got {tuple(z.shape)}")
        return self.network.decode(z.to(self.device)).cpu()

    def sample(self, n: int = 25, seed: int = 0) -> torch.Tensor:
        """n images (n, 1, 28, 28) decoded from z ~ N(0, I) (the same draws as `vaelab evaluate` for a seed)."""
        return vae_samples(self.network, n, seed)

    def reconstruct(self, x) -> torch.Tensor:
        """Pixel means (N, 1, 28, 28) decoded from mu(x): the deterministic reconstruction."""
        return self.decode(self.encode(x)[0])

    def interpolate(self, a, b, steps: int = 10, mode: str = "lerp") -> torch.Tensor:
        """steps images (steps, 1, 28, 28) along the line (lerp) or arc (slerp) from mu(a) to mu(b)."""
        if steps < 2:
            raise VaelabError(f"steps must be >= 2 (got {steps})")
        if mode not in ("lerp", "slerp"):
            raise VaelabError(f"mode must be 'lerp' or 'slerp' (got {mode!r})")
        mu, _ = self.encode(torch.cat([as_images(a)[:1], as_images(b)[:1]]))  # (2, D)
        r = torch.linspace(0, 1, steps)[:, None]  # (steps, 1)
        z = (1 - r) * mu[0] + r * mu[1] if mode == "lerp" else slerp(mu[0], mu[1], r)  # (steps, D)
        return self.decode(z)


class DDPMModel(RunModel):
    """A trained DDPM: sample with DDPM or DDIM, invert images to noise (DDIM) and back; config, history, metrics."""

    kind = "ddpm"

    def __init__(self, run: DDPMRun):
        super().__init__(run)  # network: the UNet (EMA weights unless opened with ema=False)
        self.schedule = run.schedule

    def __repr__(self) -> str:
        return (f"DDPMModel(UNet {count_parameters(self.network):,} parameters, T={self.schedule.T}, "
                f"{len(self.history)} epochs, {'EMA' if self.run.ema else 'raw'} weights, {self.path})")

    def sample(self, n: int = 25, sampler: str = "ddim", steps: int | None = None, eta: float | None = None,
               seed: int = 0) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1]; sampler 'ddpm' (all T steps) or 'ddim' (50 steps, eta 0 by default)."""
        images, _ = generate(self.run, n, sampler, steps, eta, seed)
        return images

    def invert(self, x, steps: int = 50, batch: int = 500) -> torch.Tensor:
        """DDIM inversion (Song et al. 5.4): images x in [0, 1] -> x_T (N, 1, 28, 28) that DDIM-`steps` maps back to x."""
        x0 = as_images(x) * 2 - 1  # the DDPM's range [-1, 1]
        eps = eps_model(self.network, self.device, self.run.cfg.train.amp)
        return torch.cat([ddim_invert(self.schedule, eps, x0[i:i + batch].to(self.device), steps).cpu()
                          for i in range(0, len(x0), batch)])

    def decode_latent(self, x_T, steps: int = 50, batch: int = 500) -> torch.Tensor:
        """Images (N, 1, 28, 28) in [0, 1] that deterministic DDIM (eta 0, `steps` steps) draws from noise x_T."""
        x_T = torch.as_tensor(x_T, dtype=torch.float32)
        x_T = x_T.view(-1, 1, 28, 28) if x_T.dim() != 4 else x_T
        if tuple(x_T.shape[1:]) != (1, 28, 28):
            raise VaelabError(f"x_T must be (N, 1, 28, 28) noise; got {tuple(x_T.shape)}")
        eps = eps_model(self.network, self.device, self.run.cfg.train.amp)
        out = [sample_loop(self.schedule, eps, x_T[i:i + batch].to(self.device), "ddim", steps, 0.0).cpu()
               for i in range(0, len(x_T), batch)]
        return (torch.cat(out) + 1) / 2
