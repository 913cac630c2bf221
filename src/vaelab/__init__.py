"""vaelab: a lab for studying VAEs and a DDPM on MNIST and Fashion-MNIST.

The Python API, for notebooks (the CLI calls the same functions):

    import vaelab
    vae = vaelab.train(model="conv", latent_dim=2, epochs=1, out="runs/nb")  # -> VAEModel
    vae = vaelab.load("runs/nb")          # VAEModel or DDPMModel: .encode .decode .sample .reconstruct .interpolate
    metrics = vaelab.evaluate("runs/nb")  # metrics.json, as `vaelab evaluate`
    scores = vaelab.score(images)         # sample quality of any (N, 1, 28, 28) images in [0, 1]
    data = vaelab.datasets.load("mnist")  # uint8 tensors .train_x .train_y .test_x .test_y
"""

from vaelab.version import __version__
from vaelab import datasets
from vaelab.api import evaluate, load, score, train, train_ddpm
from vaelab.handles import DDPMModel, VAEModel

__all__ = ["__version__", "datasets", "load", "train", "train_ddpm", "evaluate", "score", "VAEModel", "DDPMModel"]
