"""How well a VAE explains the test images: -ELBO and its parts, KL per latent dimension, active units, and
the importance-weighted bound on log p(x).

Active units follow Burda et al. 2015 (Var_x E_q[z_d] > 0.01). The IWAE bound (Burda et al. 2015) is
log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i | x)]; it tightens as k grows. -log p(x|z) is the model's
own (vae.losses.neg_log_px under the run's likelihood), the same term training minimises.

Every likelihood number carries its protocol (vae/loss.py's PROTOCOLS; the DDPM's bound is discretized-8bit):
nats of different protocols never share a column. `summary` gives a mean with its interval over images.
"""

from __future__ import annotations

import copy
import math
import sys

import torch
from tqdm.auto import tqdm

from vaelab.data.registry import Dataset
from vaelab.diffusion.likelihood import bits_per_dim
from vaelab.vae.loss import kl_per_dim, neg_log_px
from vaelab.vae.networks import VAE
from vaelab.vae.train import TEST_SEED

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2
LOG_2PI = math.log(2 * math.pi)
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
EIGHT_BIT = "discretized-8bit"  # the protocol on which the VAE and the DDPM compare
PROTOCOL_NOTES = {
    "bernoulli-grey": "grey levels in [0, 1] as Bernoulli targets (the report's BCE): not a normalised likelihood "
                      "of 8-bit images; comparable with no other protocol",
    "binarized": "dynamically binarised images, Bernoulli decoder: the VAE literature's nats (Burda et al. 2015)",
    EIGHT_BIT: "8-bit images, each grey level a bin of width 2/255 on [-1, 1] (edge bins open): an upper bound "
               "on -log p(x) in nats per image and bits/dim (nats / (784 ln 2)), the DDPM's bound's units",
}

# binarize -> (variant name, note template); {title} is the run's dataset, {literature} where published nats exist
DATA_VARIANTS = {
    True: ("binarized", "dynamically binarised {title}; test set = one fixed Bernoulli draw of the intensities "
                        f"(seed {TEST_SEED}); nats comparable with the literature{{literature}}"),
    False: ("grayscale", "{title} intensities in [0, 1] as Bernoulli targets (BCE, as in the report); not a "
                         "normalised likelihood of discrete data, so not comparable with published nats"),
}
# published binarised nats to compare with, by dataset name (a fact about papers, not about the data)
LITERATURE = {"mnist": " (Burda et al. 2015 report about 86.8 for a one-layer VAE, latent 50, k=5000)"}


def data_variant(binarize: bool, dataset: Dataset) -> tuple[str, str]:
    """(variant name, note) of a run's test data: 'binarized' or 'grayscale', the note naming its dataset."""
    name, note = DATA_VARIANTS[binarize]
    return name, note.format(title=dataset.title, literature=LITERATURE.get(dataset.name, ""))


def fast_copy(model: VAE) -> VAE:
    """An eval copy in channels_last memory format (faster conv decoding on CPU)."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last).eval()


def summary(values: torch.Tensor, protocol: str, dims: int = 784) -> dict:
    """Mean of per-image nats with a 95% normal-approximation interval of the mean (mean +- 1.96 sd / sqrt(N)),
    in nats and bits/dim, N and the protocol: the form every likelihood number is stored in."""
    v = values.double().cpu()
    n, mean = len(v), float(v.mean())
    half = Z95 * float(v.std()) / math.sqrt(n) if n > 1 else float("nan")
    ci = [mean - half, mean + half]
    return {"protocol": protocol, "nats": mean, "nats_ci": ci, "bits_per_dim": bits_per_dim(mean, dims),
            "bits_per_dim_ci": [bits_per_dim(c, dims) for c in ci], "n": n,
            "interval": "95%, normal approximation of the mean over the N images: mean +- 1.96 sd / sqrt(N)"}


@torch.no_grad()
def likelihood(model: VAE, x: torch.Tensor, seed: int = 0, batch: int = 1000,
               px: str = "bernoulli") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """-ELBO parts, KL per dimension and active units over x (N, 1, 28, 28) with p(x|z) `px`; also mu (N, D),
    -ELBO (N,)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    recon, kl_dims, mus = [], [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        mu, logvar = model.encode(xb)  # (B, D) each
        eps = torch.randn(mu.shape, generator=g, device=x.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)  # one reparameterised sample per image
        recon.append(neg_log_px(model.decode_logits(z), xb, likelihood=px))  # (B,)
        kl_dims.append(kl_per_dim(mu, logvar))  # (B, D)
        mus.append(mu)
    recon_t, kl_t, mu_t = torch.cat(recon).double(), torch.cat(kl_dims).double(), torch.cat(mus)
    neg_elbo = recon_t + kl_t.sum(1)  # (N,)
    mu_var = mu_t.double().var(0)  # (D,) Var_x of E_q[z_d | x]
    out = {"images": len(x), "neg_elbo": float(neg_elbo.mean()), "recon": float(recon_t.mean()),
           "kl": float(kl_t.sum(1).mean()), "kl_per_dim": kl_t.mean(0).tolist(),
           "mu_variance": mu_var.tolist(), "active_units": int((mu_var > ACTIVE_THRESHOLD).sum()),
           "active_threshold": ACTIVE_THRESHOLD, "latent_dim": mu_t.shape[1]}
    return out, mu_t, neg_elbo


@torch.no_grad()
def iwae_log_px(model: VAE, x: torch.Tensor, k: int, seed: int = 0, max_decodes: int = 4096,
                progress: bool = False, px: str = "bernoulli") -> torch.Tensor:
    """Importance-weighted estimate of log p(x) (N,) with k samples per image (k = 1: the ELBO)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    b = max(1, min(len(x), max_decodes // k))  # images per step; samples per chunk fill max_decodes
    s = max(1, min(k, max_decodes // b))
    out = []
    bar = tqdm(total=len(x), desc=f"IWAE k={k}", unit="image", disable=None if progress else True,
               file=sys.stderr, leave=False)
    for i in range(0, len(x), b):
        xb = x[i:i + b]  # (B, 1, 28, 28)
        mu, logvar = model.encode(xb)  # (B, D)
        std = torch.exp(0.5 * logvar)
        lse = torch.full((len(xb),), -math.inf, device=x.device, dtype=torch.float64)  # running logsumexp
        for j in range(0, k, s):
            n = min(s, k - j)
            eps = torch.randn((n, *mu.shape), generator=g, device=x.device, dtype=mu.dtype)  # (n, B, D)
            z = mu + eps * std  # (n, B, D)
            logits = model.decode_logits(z.reshape(-1, z.shape[-1])).view(n, *xb.shape)  # (n, B, 1, 28, 28)
            log_px_z = -neg_log_px(logits, xb, batch_dims=2, likelihood=px)  # (n, B)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(2)  # log N(z; 0, I)
            log_qz = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(2)  # log N(z; mu, sigma^2)
            log_w = (log_px_z + log_pz - log_qz).double()  # (n, B)
            lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        out.append(lse - math.log(k))  # log (1/k) sum_i w_i
        bar.update(len(xb))
    bar.close()
    return torch.cat(out)
