"""`vaelab score PATH`: the sample-quality numbers of any generator's images, with the pinned classifier."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vaelab.cli.common import add_dataset, dataset_of, nonneg_int, positive_int
from vaelab.cli.evaluate import anchor_rows, num, table_of, with_n
from vaelab.data.images import load
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.engine.runs import pick_device
from vaelab.metrics.reference import own
from vaelab.metrics.score import MIN_IMAGES, PROTOCOL_N, read_images, score_images

ROWS = [
    ("images", lambda m: f"{m['sample_quality']['n']:,} from {m['source']}"),
    ("reference", lambda m: m["sample_quality"]["reference"]),
    ("FD-LeNet (lower is better)", with_n("fd_lenet")), *anchor_rows("fd_lenet"),
    ("precision (k=3)", with_n("precision", "{:.3f}")), *anchor_rows("precision", "{:.3f}"),
    ("recall (k=3)", with_n("recall", "{:.3f}")), *anchor_rows("recall", "{:.3f}"),
    ("density (k=5; ~1 = like the test set)", with_n("density", "{:.3f}")), *anchor_rows("density", "{:.3f}"),
    ("coverage (k=5)", with_n("coverage", "{:.3f}")), *anchor_rows("coverage", "{:.3f}"),
    ("classifier score (max 10)", with_n("classifier_score")), *anchor_rows("classifier_score"),
    ("class histogram", lambda m: " ".join(f"{v:.3f}" for v in m["sample_quality"]["class_histogram"])),
    ("class entropy (max 2.303)", num("sample_quality.class_entropy", "{:.3f}")),
    ("classifier", lambda m: "{} sha256 {} ({})".format(
        m["sample_quality"]["classifier"]["dataset"], m["sample_quality"]["classifier"]["sha256"][:12],
        "pinned, shipped with vaelab" if m["sample_quality"]["classifier"]["pinned"] else "NOT the pinned one")),
    ("seconds", num("seconds", "{:.1f}")),
]


def default_out(path: Path) -> Path:
    """Where the scores go by default: x.npy -> x.score.json; a folder -> FOLDER.score.json beside it."""
    path = path.resolve()
    return path.with_name(path.name + ".score.json") if path.is_dir() else path.with_suffix(".score.json")


def cmd_score(args) -> int:
    """Read the images, score them against the dataset's test set, print the table and write the JSON."""
    t0 = time.perf_counter()
    path = Path(args.path)
    images = read_images(path, args.key)
    data = load(dataset_of(args), args.data_dir)
    device = pick_device(args.device)
    clf = own(args.classifier, device, data.dataset) if args.classifier else None
    sq = score_images(images, data, device, args.n_ref, clf, args.resamples, args.seed, args.min_images)
    result = {"format": "vaelab-score-1", "source": str(path), "dataset": data.dataset.name,
              "sample_quality": sq, "seconds": round(time.perf_counter() - t0, 1)}
    print(table_of(ROWS, [path.name or str(path)], [result], args.markdown))
    if "note" in sq:
        print(f"\nnote: {sq['note']}")
    out = Path(args.out) if args.out else default_out(path)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return 0


SCORE_HELP = f"""Score any generator's images with vaelab's pinned reference classifier of the dataset.

The same images give the same numbers on any machine: the classifier's weights and the test set's feature
statistics ship inside vaelab (sha256 pinned), instead of being trained on each machine.

input: a .npy or .npz array (N, 28, 28) or (N, 1, 28, 28), uint8 0..255 or float in [0, 1] (--key names the
array of a .npz holding several), or a folder of 28x28 grayscale PNGs (sorted by name).

output: FD-LeNet (Frechet distance in the LeNet's 128 features; not FID), precision/recall (k=3),
density/coverage (k=5), classifier score (Inception Score formula, max 10) and the class histogram, each
with its 95% bootstrap interval over the N images, and the floor (N training images) and ceiling (N
uniform-noise images) anchors at the same N. Printed, and written as JSON (default: beside PATH).

protocol (so others can compare with you): score N = {PROTOCOL_N:,} images against the full test set
(--n-ref 10000, the default), report FD-LeNet with its interval and N, precision, recall, density,
coverage and the classifier score, and the classifier's sha256 (printed). FD-LeNet falls as N grows
(bias), so numbers at different N do not compare; fewer than {MIN_IMAGES} images are refused.

cost: about 35 s for 10,000 images on 2 busy CPU cores, start-up included (the classifier on the images and
the test set, the k-NN balls, 200 bootstrap resamples); a new N computes its anchors once (cached)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `score`."""
    s = sub.add_parser("score", help="sample quality of any generator's images (.npy/.npz/PNG folder)",
                       description=SCORE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("path", help="a .npy/.npz array of images or a folder of PNGs")
    s.add_argument("--key", default=None, help="the array of a .npz that holds several")
    s.add_argument("--n-ref", type=positive_int, default=10000, help="first test images as reference (default all)")
    s.add_argument("--resamples", type=nonneg_int, default=200, help="bootstrap resamples for the intervals (0: none)")
    s.add_argument("--seed", type=nonneg_int, default=0, help="seed of the bootstrap (default 0)")
    s.add_argument("--min-images", type=positive_int, default=MIN_IMAGES, help=argparse.SUPPRESS)
    s.add_argument("--classifier", default=None, metavar="PATH",
                   help="a classifier folder of your own (`vaelab classifier train --out`) instead of the pinned one")
    s.add_argument("--out", default=None, help="the JSON file to write (default: PATH.score.json)")
    s.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    s.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_dataset(s)  # --dataset: the dataset the images imitate
    s.set_defaults(func=cmd_score)

