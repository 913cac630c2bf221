"""vaelab: a lab for studying VAEs and a DDPM on MNIST and Fashion-MNIST.

The Python API, for notebooks (the CLI calls the same functions):

    import vaelab
    vae = vaelab.train(model="conv", latent_dim=2, epochs=1, out="runs/nb")  # -> VAEModel
    vae = vaelab.load("runs/nb")          # VAEModel or DDPMModel: .encode .decode .sample .reconstruct .interpolate
    metrics = vaelab.evaluate("runs/nb")  # metrics.json, as `vaelab evaluate`
    scores = vaelab.score(images)         # sample quality of any (N, 1, 28, 28) images in [0, 1]
    data = vaelab.datasets.load("mnist")  # uint8 tensors .train_x .train_y .test_x .test_y

`import vaelab` itself imports no torch: each name below is imported on first use (PEP 562), so the
command line (`vaelab --help`) and light modules such as vaelab.config start at once.
"""

import importlib

from vaelab.version import __version__

# public name -> the module that defines it ("vaelab.datasets" is itself the module)
_LAZY = {"datasets": "vaelab.datasets", "load": "vaelab.api", "train": "vaelab.api", "train_ddpm": "vaelab.api",
         "evaluate": "vaelab.api", "score": "vaelab.api", "VAEModel": "vaelab.handles",
         "DDPMModel": "vaelab.handles"}

__all__ = ["__version__", "datasets", "load", "train", "train_ddpm", "evaluate", "score", "VAEModel", "DDPMModel"]


def __getattr__(name: str):
    """Import a public name's module on first use and keep the name in this package's namespace."""
    if name not in _LAZY:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"vaelab.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, imported or not, beside what the package already holds."""
    return sorted(set(globals()) | set(__all__))
