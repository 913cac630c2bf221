"""The interactive latent explorer: one self-contained HTML page per VAE run (`vaelab explore RUN`).

The page carries the decoder's weights (base64 float32) and a plain-JavaScript decoder (explorer.js) that
runs the same layers as PyTorch, so decoding follows the mouse without a server. It also carries a map of
test-set posterior means: the latent itself for D <= 2, else a t-SNE (figures.embed_2d, the latent figure's
settings) or a PCA of a seeded subset of the test set. t-SNE has no inverse, so there a map point decodes
the inverse-distance-weighted mean of the mu of its K_NEAREST nearest test points; PCA and the identity
map invert exactly (z = mean + map point @ P). The page names its run by a path relative to the page's folder
(the run's name when the page lies in the run folder), never a machine-absolute one.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from vaelab.data.images import Images
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.errors import VaelabError
from vaelab.vae import figures
from vaelab.vae.networks import ConvDecoder, DenseDecoder
from vaelab.vae.run import VAERun

PAGE = "explorer.html"  # the page's default name in a run folder
TEMPLATE = Path(__file__).with_name("explorer.html")
SCRIPT = Path(__file__).with_name("explorer.js")
DEFAULT_POINTS = 2000  # test points on the map: t-SNE of 2,000 takes about 6 s on one core
MAX_SLIDERS = 16  # above this many dimensions, sliders for the 16 whose mu varies most over the test set
K_NEAREST = 6  # neighbours averaged to invert a t-SNE map
MAPS = ("auto", "tsne", "pca")
TSNE_PERPLEXITY = 30  # scikit-learn's default, which figures.embed_2d keeps; t-SNE needs more points than it


class Weights:
    """The decoder's parameters laid end to end in one float32 buffer; layers refer to offsets in it."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, array: torch.Tensor | np.ndarray) -> int:
        """Append an array (flattened, float32); its offset in floats."""
        flat = np.ascontiguousarray(np.asarray(array, dtype=np.float32).ravel())
        self.parts.append(flat)
        self.size += flat.size
        return self.size - flat.size

    def base64(self) -> str:
        """All parameters as little-endian float32, base64."""
        return b64(np.concatenate(self.parts).astype("<f4"))


def b64(array: np.ndarray) -> str:
    """The bytes of an array as base64 text."""
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def linear(layer: torch.nn.Linear, w: Weights, relu: bool, rows: torch.Tensor | None = None) -> dict:
    """A Linear layer for the page: weights stored transposed (in, out), so a zero input skips a whole row."""
    weight, bias = layer.weight.detach().cpu(), layer.bias.detach().cpu()
    if rows is not None:  # reorder outputs (the conv decoder's CHW view becomes the page's HWC layout)
        weight, bias = weight[rows], bias[rows]
    return {"op": "linear", "in": weight.shape[1], "out": weight.shape[0], "relu": relu,
            "w": w.add(weight.t().numpy()), "b": w.add(bias.numpy())}


def conv_transpose(layer: torch.nn.ConvTranspose2d, side: int, w: Weights, relu: bool) -> tuple[dict, int]:
    """A ConvTranspose2d for the page (weights as [c_in][ky][kx][c_out]), and its output side."""
    (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
    if layer.output_padding != (0, 0) or layer.dilation != (1, 1) or layer.groups != 1:
        raise VaelabError("the explorer's ConvTranspose2d has no output padding, dilation or groups")
    weight = layer.weight.detach().cpu()  # (c_in, c_out, k, k)
    out_side = (side - 1) * s - 2 * p + k
    spec = {"op": "convT", "cin": weight.shape[0], "cout": weight.shape[1], "k": k, "s": s, "p": p,
            "hin": side, "hout": out_side, "relu": relu,
            "w": w.add(weight.permute(0, 2, 3, 1).numpy()), "b": w.add(layer.bias.detach().cpu().numpy())}
    return spec, out_side


def dense_layers(decoder: DenseDecoder, w: Weights) -> list[dict]:
    """Linear + ReLU layers, then the output Linear (logits)."""
    return [*(linear(layer, w, relu=True) for layer in decoder.fc_layers), linear(decoder.fc_out, w, relu=False)]


def conv_layers(decoder: ConvDecoder, w: Weights) -> list[dict]:
    """Linear + ReLU into a (C, side, side) map, then ConvTranspose2d layers with ReLU between them."""
    c, side = decoder.c, decoder.side
    # the page keeps feature maps channel-last (HWC): its inner loops then run over contiguous channels
    hwc = torch.arange(c * side * side).view(c, side, side).permute(1, 2, 0).reshape(-1)
    layers = [linear(decoder.fc, w, relu=True, rows=hwc)]
    modules = list(decoder.deconv_layers)
    for i, m in enumerate(modules):
        if isinstance(m, torch.nn.ConvTranspose2d):
            relu = i + 1 < len(modules) and isinstance(modules[i + 1], torch.nn.ReLU)
            spec, side = conv_transpose(m, side, w, relu)
            layers.append(spec)
        elif not isinstance(m, torch.nn.ReLU):
            raise VaelabError(f"the explorer cannot run a {type(m).__name__} layer in the browser")
    return layers


EXPORTERS = {DenseDecoder: dense_layers, ConvDecoder: conv_layers}  # every decoder of models.FAMILIES


def decoder_spec(decoder: torch.nn.Module) -> dict:
    """The decoder as the page's layer list and weight buffer; VaelabError for a decoder it cannot run."""
    export = EXPORTERS.get(type(decoder))
    if export is None:
        raise VaelabError(f"the explorer runs the dense and conv decoders in the browser, not a "
                          f"{type(decoder).__name__}")
    w = Weights()
    layers = export(decoder, w)
    last = layers[-1]
    if (last["out"] if last["op"] == "linear" else last["cout"] * last["hout"] ** 2) != 28 * 28:
        raise VaelabError("the explorer draws one 28 x 28 image per latent")
    return {"layers": layers, "weights": w.base64(), "parameters": w.size}


def pca(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map points, P (2, D), mean) of the first two principal components: mu ~ mean + points @ P."""
    mean = mu.mean(0)
    _, _, vt = np.linalg.svd(mu - mean, full_matrices=False)
    return (mu - mean) @ vt[:2].T, vt[:2], mean


def latent_map(mu: np.ndarray, how: str, seed: int) -> tuple[np.ndarray, dict]:
    """2-D map points of posterior means and how the page turns a map point back into a latent."""
    d = mu.shape[1]
    if how not in MAPS:
        raise VaelabError(f"unknown map {how!r}: choose {', '.join(MAPS)}")
    if d <= 2:  # the latent itself (a line at y = 0 for D = 1): exactly invertible
        points = mu if d == 2 else np.c_[mu, np.zeros(len(mu))]
        return points, {"how": "identity", "P": np.eye(2, d).tolist(), "mean": [0.0] * d}
    if how == "pca" or (how == "auto" and len(mu) <= TSNE_PERPLEXITY):  # too few points for a t-SNE
        points, p, mean = pca(mu)
        return points, {"how": "PCA", "P": p.tolist(), "mean": mean.tolist()}
    if len(mu) <= TSNE_PERPLEXITY:
        raise VaelabError(f"a t-SNE map needs more than {TSNE_PERPLEXITY} points (got {len(mu)}): use more "
                          "points or the PCA map")
    points, _ = figures.embed_2d(mu, seed)
    return points, {"how": "t-SNE", "P": None, "mean": None, "k": K_NEAREST}


def subset(n_test: int, points: int, seed: int) -> torch.Tensor:
    """Sorted test-set indices of a seeded random subset of `points` images (all if fewer)."""
    if points < 2:
        raise VaelabError(f"the map needs at least 2 points (got {points})")
    return torch.randperm(n_test, generator=figures.generator(seed))[:points].sort().values


def slider_dims(mu: np.ndarray) -> list[int]:
    """Latent dimensions that get a slider: all up to MAX_SLIDERS, else those whose mu varies most."""
    order = np.argsort(-mu.var(0), kind="stable")
    return sorted(int(i) for i in order[:MAX_SLIDERS])


def run_label(run_dir: Path, base: Path | None) -> str:
    """How the page names its run: the path from `base` (the page's folder) to the run, with '/' and '..';
    the run folder's name where the page lies in it or no base is given."""
    if base is None:
        return Path(run_dir).name
    try:
        rel = Path(os.path.relpath(os.path.abspath(run_dir), os.path.abspath(base))).as_posix()
    except ValueError:  # on another drive (Windows): no relative path
        return Path(run_dir).name
    return Path(run_dir).name if rel == "." else rel


def page_data(run: VAERun, data: Images, points: int = DEFAULT_POINTS, how: str = "auto", seed: int = 0,
              base: Path | None = None) -> dict:
    """Everything the page shows: model, decoder, map, test points (indices, labels, mu, images); the run named
    relative to `base`, the folder the page is written to (run_label)."""
    idx = subset(len(data.test_x), points, seed)
    x = data.test_x[idx]
    mu = figures.mu_of(run, x).astype(np.float32)
    xy, inverse = latent_map(mu, how, seed)
    images = zlib.compress(x.numpy().astype(np.uint8).tobytes(), 9)  # about 5x smaller; the page inflates it
    pair = data.dataset.interpolation_pair
    labels = data.test_y[idx].numpy()
    # the interpolation starts between the figure's two classes (3 and 8 for MNIST); points 0 and 1 if absent
    first = [int(np.flatnonzero(labels == c)[0]) if (labels == c).any() else i for i, c in enumerate(pair)]
    return {"title": figures.describe(run), "run": run_label(run.path, base), "dataset": data.dataset.title,
            "classes": list(data.dataset.classes), "latent_dim": run.cfg.model.latent_dim,
            "map": inverse, "sliders": slider_dims(mu), "pair": first,
            "points": {"n": len(idx), "index": b64(idx.numpy().astype("<i4")), "label": b64(labels.astype(np.uint8)),
                       "xy": b64(xy.astype("<f4")), "mu": b64(mu.astype("<f4")),
                       "images": base64.b64encode(images).decode("ascii")},
            "decoder": decoder_spec(run.model.decoder)}


def render(payload: dict) -> str:
    """The self-contained page: the template with the script and the data inlined."""
    text = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")  # nothing can end the <script>
    return (TEMPLATE.read_text(encoding="utf-8").replace("/*VAELAB_JS*/", SCRIPT.read_text(encoding="utf-8"))
            .replace("/*VAELAB_DATA*/", text))


def write_explorer(run: VAERun, data: Images, out: Path | None = None, points: int = DEFAULT_POINTS,
                   how: str = "auto", seed: int = 0) -> Path:
    """Write the explorer page of a run (default RUN/explorer.html); returns its path."""
    if data.dataset.image_shape != (28, 28):
        raise VaelabError("the explorer draws 28 x 28 images")
    out = Path(out) if out is not None else run.path / PAGE
    atomic_write_text(out, render(page_data(run, data, points, how, seed, base=out.parent)))
    return out
