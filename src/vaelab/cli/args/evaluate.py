"""Arguments of the measurement commands: evaluate, compare, classifier train|info."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset, nonneg_int, positive_int
from vaelab.data.registry import DATASETS, DEFAULT

# metrics/evaluate.py's DEFAULT and QUICK settings (it imports torch), for the help; tests/test_startup.py checks them
SETTINGS = {"iwae_k": 100, "iwae_images": 2000, "n_samples": 10000, "probe_train": 60000, "bound_images": 1000,
            "bound_k": 10}
QUICK = {"test_images": 2000, "iwae_k": 10, "iwae_images": 200, "n_samples": 1000, "probe_train": 5000}

EVALUATE_HELP = """Measure a trained run on the test set of its own dataset, write metrics.json into the run folder and
print the table: likelihood (-ELBO and its parts, active units, the IWAE bound -log p(x)); sample quality of N
generated images in the pinned LeNet's features (FD-LeNet, precision/recall, density/coverage after Naeem et al.
2020, classifier score, each with a 95% bootstrap interval and its floor and ceiling anchors); latent structure
(probes, silhouette, prior holes, the aggregate posterior against the prior).

Example: vaelab evaluate runs/conv --quick"""


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    """Add evaluate."""
    e = add_command(sub, "evaluate", "measure a run: likelihood, sample quality, latent structure -> metrics.json",
                    EVALUATE_HELP, "vaelab.cli.evaluate:cmd_evaluate",)
    e.add_argument("run", help="a trained run folder")
    e.add_argument("--quick", action="store_true",
                   help=f"smoke-test settings: {QUICK['test_images']:,} test images, IWAE k={QUICK['iwae_k']} on "
                        f"{QUICK['iwae_images']}, N={QUICK['n_samples']:,} samples, probes fitted on "
                        f"{QUICK['probe_train']:,} training images (seconds; numbers noisier and not comparable "
                        "with the default's, FD-LeNet above all since it depends on N)")
    e.add_argument("--k", type=positive_int, default=None,
                   help=f"IWAE samples per image (default {SETTINGS['iwae_k']}; 5000 as in Burda et al., hours on "
                        "a CPU at the default --iwae-images: the cost grows as k x images)")
    e.add_argument("--iwae-images", type=positive_int, default=None,
                   help=f"first test images scored by IWAE (default {SETTINGS['iwae_images']:,}; cost grows as k x "
                        "images)")
    e.add_argument("--samples", type=positive_int, default=None,
                   help=f"N generated images for sample quality (default {SETTINGS['n_samples']:,}; anchors are "
                        "computed once per N)")
    e.add_argument("--probe-train", type=positive_int, default=None,
                   help=f"training images the latent probes are fitted on (default all {SETTINGS['probe_train']:,})")
    e.add_argument("--bound-images", type=positive_int, default=None,
                   help=f"DDPM runs: first test images of the variational bound (default {SETTINGS['bound_images']:,})")
    e.add_argument("--bound-k", type=nonneg_int, default=None,
                   help=f"DDPM runs: sampled steps t per image of the bound (default {SETTINGS['bound_k']}; 0: all T "
                        "steps, exact, T network evaluations per image)")
    e.add_argument("--seed", type=nonneg_int, default=None, help="seed of every random draw (default 0)")
    e.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    e.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    e.add_argument("--classifier", default=None, metavar="PATH",
                   help="score with a classifier of your own (`vaelab classifier train --out`) instead of the pinned "
                        "one; metrics.json records which (its numbers then compare only with the same classifier's)")
    add_dataset(e, of_run=True)


def register_classifier(sub: argparse._SubParsersAction) -> None:
    """Add classifier train|info."""
    k = add_command(sub, "classifier", "the reference classifiers of the sample-quality metrics",
                    "vaelab scores samples in the features of a small LeNet per dataset. The pinned ones ship "
                    "inside vaelab (weights, test-set feature statistics and anchors; sha256 checked on every "
                    "load), so every machine gets the same numbers. `train` makes one of your own (or, with --out, "
                    "how the shipped ones were made); use it with --classifier PATH.\n\nExample: vaelab classifier info")
    ks = k.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = add_command(ks, "train", "train a classifier of your own, with its statistics and anchors",
                    "Train a dataset's LeNet (seed 0, 10 epochs) unless a valid one is in the folder (or --force), "
                    "then save the test set's feature statistics and the anchors at the standard N beside it. "
                    "\n\nExample: vaelab classifier train --out runs/lenet", "vaelab.cli.evaluate:cmd_classifier",
                    "classifier")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="folder to write (default: VAELAB_CACHE/classifier/NAME); the shipped ones were made with "
                        "--out src/vaelab/metrics/reference/NAME")
    t.add_argument("--force", action="store_true", help="retrain even if a valid one is there")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(t)
    i = add_command(ks, "info", "the pinned classifier's record (or --classifier PATH's), checksum checked",
                    "Show a classifier's record (accuracy, sha256, training command) after checking it. "
                    "\n\nExample: vaelab classifier info --dataset fashion-mnist", "vaelab.cli.evaluate:cmd_classifier",
                    "classifier")
    i.add_argument("--dataset", choices=list(DATASETS), default=None, metavar="NAME",
                   help=f"whose classifier: {', '.join(DATASETS)} (default {DEFAULT})")
    i.add_argument("--classifier", default=None, metavar="PATH", help="a folder of your own instead of the pinned one")


def register(sub: argparse._SubParsersAction) -> None:
    """Add evaluate, compare and classifier."""
    register_evaluate(sub)
    c = add_command(sub, "compare", "side-by-side table of evaluated runs (their metrics.json)",
                    "Print the metrics of several evaluated runs side by side (run `vaelab evaluate` on each "
                    "first); nothing is recomputed.\n\nExample: vaelab compare runs/dense runs/conv --markdown",
                    "vaelab.cli.evaluate:cmd_compare")
    c.add_argument("runs", nargs="+", help="evaluated run folders")
    c.add_argument("--markdown", action="store_true", help="print a Markdown table")
    register_classifier(sub)
