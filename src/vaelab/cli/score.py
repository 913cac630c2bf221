"""`vaelab score PATH`: the sample-quality numbers of any generator's images, with the pinned classifier
(arguments: args/score.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vaelab.cli.common import dataset_of
from vaelab.cli.evaluate import anchor_rows, num, table_of, with_n
from vaelab.data.images import load
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.engine.runs import pick_device
from vaelab.metrics.reference import own
from vaelab.metrics.score import read_images, score_images

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
