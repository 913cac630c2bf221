"""The report's DDPM noise predictor (annex): a small U-Net, eps = net(x_t, t).

The network knows nothing of the noise schedule: it maps a noisy image and its integer step t to a
noise estimate of the same shape. Widths are configurable so that tests and the CPU `quick` profile
can use a tiny net; the default, "32-64-128-256", is exactly the annex's SimpleMNistUNet (encoder
32, 64, 128, bottleneck 256, time embedding 64), and with it the state_dict keys are the annex's
too (enc1..enc3, bottleneck, up1..up3, dec1..dec3, final_conv), so weights trained with the
report's code load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaelab.diffusion.config import ANNEX_TIME_DIM, ANNEX_WIDTHS, parse_widths
from vaelab.errors import VaelabError

class SinusoidalPositionEmbeddings(nn.Module):
    """Integer steps t (B,) -> sin/cos features (B, dim), as in the Transformer and the annex."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise VaelabError(f"time embedding size must be an even number >= 4 (got {dim})")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed steps t (B,) as (B, dim); computed in float32 whatever the autocast mode."""
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32)
                          * -(math.log(10000.0) / (half - 1)))  # (half,)
        args = t.float()[:, None] * freqs[None, :]  # (B, half)
        return torch.cat((args.sin(), args.cos()), dim=-1)  # (B, dim)


class SimpleBlock(nn.Module):
    """conv3x3 - SiLU - (+ time projection) - conv3x3 - SiLU, as the annex's SimpleBlock."""

    def __init__(self, in_channels: int, out_channels: int, time_emb_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.time_mlp = nn.Linear(time_emb_dim, out_channels)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W), t_emb (B, E) -> (B, C_out, H, W)."""
        h = F.silu(self.conv1(x))
        h = h + self.time_mlp(t_emb)[:, :, None, None]  # (B, C_out) broadcast over H, W
        return F.silu(self.conv2(h))


class UNet(nn.Module):
    """The annex's SimpleMNistUNet with configurable widths: eps = net(x_t, t)."""

    def __init__(self, widths: str = ANNEX_WIDTHS, time_emb_dim: int = ANNEX_TIME_DIM,
                 in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        dims = parse_widths(widths)
        enc, mid = dims[:-1], dims[-1]
        self.levels = len(enc)
        self.time_mlp = nn.Sequential(SinusoidalPositionEmbeddings(time_emb_dim),
                                      nn.Linear(time_emb_dim, time_emb_dim), nn.SiLU(),
                                      nn.Linear(time_emb_dim, time_emb_dim))
        # Named as the annex (enc1, up1 ...) rather than ModuleLists, so its checkpoints load unchanged.
        for i, (a, b) in enumerate(zip((in_channels, *enc[:-1]), enc), start=1):
            self.add_module(f"enc{i}", SimpleBlock(a, b, time_emb_dim))
        self.bottleneck = SimpleBlock(enc[-1], mid, time_emb_dim)
        ups = list(reversed(enc))  # decoder level j upsamples to the width of encoder level L - j + 1
        for j, (a, b) in enumerate(zip((mid, *ups[:-1]), ups), start=1):
            self.add_module(f"up{j}", nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            self.add_module(f"dec{j}", SimpleBlock(2 * b, b, time_emb_dim))  # input: [upsampled, skip]
        self.final_conv = nn.Conv2d(enc[0], out_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, 1, 28, 28), integer steps t (B,) -> predicted noise eps (B, 1, 28, 28)."""
        t_emb = self.time_mlp(t)  # (B, E)
        skips, h = [], x_t
        for i in range(1, self.levels + 1):
            h = getattr(self, f"enc{i}")(h if i == 1 else F.max_pool2d(h, 2), t_emb)
            skips.append(h)  # (B, C_i, 28 / 2^(i-1), ...): 28, 14, 7 for the annex
        h = self.bottleneck(F.max_pool2d(h, 2), t_emb)  # (B, C_mid, 3, 3) for the annex
        for j, skip in enumerate(reversed(skips), start=1):
            h = getattr(self, f"up{j}")(h)  # doubles H, W: 3 -> 6, which the 7x7 skip does not match
            if h.shape[2:] != skip.shape[2:]:
                h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = getattr(self, f"dec{j}")(torch.cat([h, skip], dim=1), t_emb)
        return self.final_conv(h)

