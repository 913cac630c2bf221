"""The report's VAE architectures by name, and their sizes in arithmetic: nothing here imports torch.

Names and parameter counts are known before anything is built, so configs validate, the CLI lists the
choices and a too-large model is refused at once; vae/networks.py builds the layers from these sizes.
"""

from __future__ import annotations

import os

from vaelab.errors import VaelabError

# Named architectures of the report's sweeps. Dense: decoder hidden sizes (the encoder mirrors them),
# so "256-512" is encoder 784-512-256 and decoder 256-512-784. Conv: encoder channels.
DENSE_ARCHS = {"128-256": (128, 256), "256-512": (256, 512), "512-1024": (512, 1024)}
CONV_ARCHS = {"32-64": (32, 64), "16-32-64": (16, 32, 64), "32-64-128": (32, 64, 128)}
REPORT_CHOICE = {"dense": ("256-512", 5), "conv": ("32-64-128", 10)}  # (arch, latent) the report settled on
PIXELS = 28 * 28  # a dense VAE's input and output size
MAX_PARAMETERS = 2 * 10**9  # refused above this whatever the machine
TRAINING_BYTES_PER_PARAMETER = 4 * 4  # float32 weights, gradients and Adam's two moments


def parse_dense(arch: str) -> tuple[int, ...]:
    """Hidden sizes of a dense architecture: a named one, or any dash-separated positive integers."""
    if arch in DENSE_ARCHS:
        return DENSE_ARCHS[arch]
    try:
        dims = tuple(int(p) for p in arch.split("-"))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise VaelabError(f"unknown dense architecture {arch!r}: use {', '.join(DENSE_ARCHS)} "
                          "or hidden sizes such as 300-600")
    return dims


def parse_conv(arch: str) -> tuple[int, ...]:
    """Encoder channels of a named conv architecture."""
    if arch not in CONV_ARCHS:
        raise VaelabError(f"unknown conv architecture {arch!r}: choose one of {', '.join(CONV_ARCHS)}")
    return CONV_ARCHS[arch]


def arch_sizes(family: str, arch: str) -> tuple[int, ...]:
    """The layer sizes of `arch` in `family`; VaelabError if either is unknown."""
    if family not in PARSERS:
        raise VaelabError(f"unknown model family {family!r}: choose {' or '.join(PARSERS)}")
    return PARSERS[family](arch)


def conv_geometry(channels: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of the last feature map: 4x4/stride-2 layers 28->14->7, then a 3x3 valid one 7->5."""
    return channels[-1], (7 if len(channels) == 2 else 5)


def linear_parameters(n_in: int, n_out: int) -> int:
    """Weights and biases of nn.Linear(n_in, n_out)."""
    return (n_in + 1) * n_out


def conv_parameters(c_in: int, c_out: int, k: int) -> int:
    """Weights and biases of a k x k Conv2d or ConvTranspose2d from c_in to c_out channels."""
    return c_in * c_out * k * k + c_out


def dense_parameters(hidden: tuple[int, ...], latent_dim: int) -> int:
    """Parameters of the dense VAE with decoder hidden sizes `hidden` (the encoder mirrors them)."""
    encoder, decoder = (PIXELS, *hidden[::-1]), (latent_dim, *hidden, PIXELS)
    return (sum(linear_parameters(a, b) for a, b in zip(encoder[:-1], encoder[1:]))
            + 2 * linear_parameters(encoder[-1], latent_dim)
            + sum(linear_parameters(a, b) for a, b in zip(decoder[:-1], decoder[1:])))


def conv_vae_parameters(channels: tuple[int, ...], latent_dim: int) -> int:
    """Parameters of the conv VAE with encoder `channels` (kernels 4, 4 then 3; the decoder mirrors them)."""
    kernels = (4, 4, 3)[:len(channels)]
    c, side = conv_geometry(channels)
    encoder = sum(conv_parameters(a, b, k) for a, b, k in zip((1, *channels[:-1]), channels, kernels))
    decoder = sum(conv_parameters(a, b, k) for a, b, k in zip(channels[::-1], (*channels[-2::-1], 1), kernels[::-1]))
    flat = c * side * side
    return encoder + 2 * linear_parameters(flat, latent_dim) + linear_parameters(latent_dim, flat) + decoder


# family -> architecture name -> layer sizes; family -> (sizes, latent_dim) -> trainable parameters,
# equal to count_parameters(build_vae(...)) (tests/test_networks.py checks it)
PARSERS = {"dense": parse_dense, "conv": parse_conv}
PARAMETER_COUNTS = {"dense": dense_parameters, "conv": conv_vae_parameters}


def estimate_parameters(family: str, arch: str, latent_dim: int) -> int:
    """Trainable parameters of build_vae(family, arch, latent_dim), from the architecture alone (nothing built)."""
    return PARAMETER_COUNTS[family](arch_sizes(family, arch), latent_dim)


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux sysconf), or None where that cannot be read."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def training_limit() -> tuple[int, str]:
    """The most bytes a model may need to train here, and what sets it: the parameter cap or the free memory."""
    cap, memory = MAX_PARAMETERS * TRAINING_BYTES_PER_PARAMETER, available_memory()
    if memory is None or cap <= memory:
        return cap, f"the cap of {MAX_PARAMETERS:,} parameters"
    return memory, "the memory available"


def check_fits(family: str, arch: str, latent_dim: int | None = None) -> None:
    """VaelabError, before anything is built, if the model is too large to train (latent_dim None: at least 1)."""
    parameters = estimate_parameters(family, arch, latent_dim or 1)
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    limit, reason = training_limit()
    if needed > limit:
        at = f" at latent_dim {latent_dim}" if latent_dim else ""
        count = f"{parameters:,}" if latent_dim else f"at least {parameters:,}"
        raise VaelabError(f"{family} architecture {arch}{at} has {count} parameters: training needs {needed:,} "
                          f"bytes (4 each for weights, gradients and two Adam moments), over the limit of "
                          f"{limit:,} bytes ({reason})")


def check_arch(family: str, arch: str, latent_dim: int | None = None) -> tuple[int, ...]:
    """The layer sizes of `arch` in `family`; VaelabError if either is unknown or the model too large to train."""
    sizes = arch_sizes(family, arch)
    check_fits(family, arch, latent_dim)
    return sizes
