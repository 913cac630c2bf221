"""The annex's UNet: shapes, parameter count, same weights layout as the report's code, overfitting."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.diffusion.config import parse_widths
from vaelab.diffusion.networks import SinusoidalPositionEmbeddings, UNet
from vaelab.nn import count_parameters
from vaelab.errors import VaelabError

ANNEX_PARAMETERS = 2_495_457  # counted from the annex's code below, and printed by the test


# ---- the report's annex, verbatim except for formatting: the reference the UNet must equal ----
class AnnexSinusoidal(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, time):
        half_dim = self.dim // 2
        embeddings = np.log(10000) / (half_dim - 1)
        embeddings = torch.exp(torch.arange(half_dim, device=time.device) * -embeddings)
        embeddings = time[:, None] * embeddings[None, :]
        return torch.cat((embeddings.sin(), embeddings.cos()), dim=-1)


class AnnexBlock(nn.Module):
    def __init__(self, in_channels, out_channels, time_emb_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.time_mlp = nn.Linear(time_emb_dim, out_channels)

    def forward(self, x, t_emb):
        h = F.silu(self.conv1(x))
        h = h + self.time_mlp(t_emb)[(...,) + (None,) * 2]
        return F.silu(self.conv2(h))


class AnnexUNet(nn.Module):
    def __init__(self, in_channels=1, out_channels=1, time_emb_dim=64):
        super().__init__()
        self.time_mlp = nn.Sequential(AnnexSinusoidal(time_emb_dim), nn.Linear(time_emb_dim, time_emb_dim),
                                      nn.SiLU(), nn.Linear(time_emb_dim, time_emb_dim))
        self.enc1 = AnnexBlock(in_channels, 32, time_emb_dim)
        self.enc2 = AnnexBlock(32, 64, time_emb_dim)
        self.enc3 = AnnexBlock(64, 128, time_emb_dim)
        self.bottleneck = AnnexBlock(128, 256, time_emb_dim)
        self.up1 = nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1)
        self.dec1 = AnnexBlock(256, 128, time_emb_dim)
        self.up2 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1)
        self.dec2 = AnnexBlock(128, 64, time_emb_dim)
        self.up3 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.dec3 = AnnexBlock(64, 32, time_emb_dim)
        self.final_conv = nn.Conv2d(32, out_channels, 3, padding=1)

    def forward(self, x, t):
        t_emb = self.time_mlp(t)
        x1 = self.enc1(x, t_emb)
        x2 = self.enc2(F.max_pool2d(x1, 2), t_emb)
        x3 = self.enc3(F.max_pool2d(x2, 2), t_emb)
        x = self.up1(self.bottleneck(F.max_pool2d(x3, 2), t_emb))
        if x.shape[2:] != x3.shape[2:]:
            x = F.interpolate(x, size=x3.shape[2:], mode="nearest")
        x = self.dec1(torch.cat([x, x3], dim=1), t_emb)
        x = self.up2(x)
        if x.shape[2:] != x2.shape[2:]:
            x = F.interpolate(x, size=x2.shape[2:], mode="nearest")
        x = self.dec2(torch.cat([x, x2], dim=1), t_emb)
        x = self.up3(x)
        if x.shape[2:] != x1.shape[2:]:
            x = F.interpolate(x, size=x1.shape[2:], mode="nearest")
        x = self.dec3(torch.cat([x, x1], dim=1), t_emb)
        return self.final_conv(x)


def test_default_is_the_annex_unet_parameter_for_parameter():
    ours, annex = UNet(), AnnexUNet()
    print(f"annex UNet parameters: {count_parameters(ours):,}")
    assert count_parameters(ours) == count_parameters(annex) == ANNEX_PARAMETERS
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in annex.state_dict().items()}


def test_annex_weights_give_the_annex_output():
    torch.manual_seed(0)
    annex = AnnexUNet()
    ours = UNet()
    ours.load_state_dict(annex.state_dict())
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0, 999])
    torch.testing.assert_close(ours(x, t), annex(x, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("widths", ["4-8", "4-8-16", "4-8-16-32", "2-4-8-8-8"])
def test_output_has_the_input_shape(widths):
    net = UNet(widths, time_emb_dim=8)
    assert net(torch.randn(2, 1, 28, 28), torch.tensor([3, 7])).shape == (2, 1, 28, 28)


def test_time_changes_the_output():
    torch.manual_seed(0)
    net = UNet("4-8-16", 8)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(net(x, torch.tensor([0])), net(x, torch.tensor([500])))


def test_sinusoidal_embedding_known_values():
    emb = SinusoidalPositionEmbeddings(8)(torch.tensor([0, 1]))
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = torch.exp(torch.arange(4) * -(np.log(10000) / 3))  # 1, 10^-4/3, 10^-8/3, 10^-4
    torch.testing.assert_close(emb[1], torch.cat([freqs.sin(), freqs.cos()]).float())


@pytest.mark.parametrize("bad", ["", "32", "a-b", "0-8", "1-2-3-4-5-6"])
def test_impossible_widths_are_refused(bad):
    with pytest.raises(VaelabError):
        parse_widths(bad)


def test_tiny_unet_overfits_one_batch():
    """The DDPM objective on one fixed batch (x0, t, eps): a tiny UNet drives the MSE far below 1."""
    torch.manual_seed(0)
    net, s = UNet("8-16", time_emb_dim=16), NoiseSchedule()
    x0 = -torch.ones(4, 1, 28, 28)
    x0[:, :, 8:20, 10:18] = 1  # a bar, in [-1, 1]
    t, eps = torch.tensor([10, 200, 500, 900]), torch.randn(4, 1, 28, 28)
    x_t = s.add_noise(x0, t, eps)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(net(x_t, t), eps)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0.9 and min(losses[-10:]) < 0.3 * losses[0], (losses[0], losses[-10:])
