"""Measurement commands: evaluate (-> metrics.json), compare (side-by-side table), classifier train/info
(arguments: args/evaluate.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import dataset_of
from vaelab.data.registry import DATASETS, DEFAULT, get
from vaelab.data.images import load
from vaelab.engine.runs import pick_device, read_metrics
from vaelab.metrics import pinning, reference
from vaelab.metrics.evaluate import DEFAULT as DEFAULT_SETTINGS
from vaelab.metrics.evaluate import QUICK, evaluate_path, settings_with


def dataset_title(name: str) -> str:
    """A registered dataset's title ('Fashion-MNIST'), else the name as recorded."""
    return DATASETS[name].title if name in DATASETS else name


def dig(m: dict, path: str):
    """m['a']['b'] for path 'a.b'; None where any part is missing."""
    for part in path.split("."):
        if not isinstance(m, dict) or part not in m:
            return None
        m = m[part]
    return m


def num(path: str, fmt: str = "{:.2f}"):
    """A table cell: the number at `path`, formatted, or '-' when absent (e.g. a DDPM has no ELBO)."""
    return lambda m: "-" if dig(m, path) is None else fmt.format(dig(m, path))


def active(m: dict) -> str:
    """'7 / 10' active units out of the latent size."""
    lik = m.get("likelihood") or {}
    return f"{lik['active_units']} / {lik['latent_dim']}" if "active_units" in lik else "-"


def iwae(m: dict) -> str:
    """IWAE -log p(x) with its k and number of images."""
    iw = dig(m, "likelihood.iwae")
    return "-" if not iw else f"{iw['neg_log_likelihood']:.2f} (k={iw['k']}, {iw['images']} img)"


def with_n(path: str, fmt: str = "{:.2f}"):
    """A sample-quality number, its 95% interval where metrics.json has one ('<path>_ci'), and its N."""
    def cell(m: dict) -> str:
        v, ci = dig(m, "sample_quality." + path), dig(m, f"sample_quality.{path}_ci")
        if v is None:
            return "-"
        band = f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""
        return fmt.format(v) + band + f" (N={m['sample_quality']['n']})"
    return cell


def anchor_rows(name: str, fmt: str = "{:.2f}") -> list[tuple]:
    """The floor and ceiling rows under a sample-quality metric."""
    return [("  floor: train vs test", num(f"sample_quality.anchors.floor.{name}", fmt)),
            ("  ceiling: noise vs test", num(f"sample_quality.anchors.ceiling.{name}", fmt))]


# the table, top to bottom: (label, cell function); compare and evaluate print the same rows
ROWS = [
    ("model", lambda m: m.get("model", "-")),
    ("dataset", lambda m: dataset_title(m.get("dataset", DEFAULT))),
    ("data variant", lambda m: m.get("data_variant", "-")),
    ("likelihood protocol", lambda m: protocol_of(m)),
    ("-ELBO, nats/image", num("likelihood.neg_elbo")),
    ("  reconstruction", num("likelihood.recon")),
    ("  KL", num("likelihood.kl")),
    ("active units (Var mu > 0.01)", active),
    ("-log p(x), IWAE bound", iwae),
    ("  -ELBO on the same images", num("likelihood.iwae.neg_elbo_same_images")),
    ("FD-LeNet (lower is better)", with_n("fd_lenet")),
    *anchor_rows("fd_lenet"),
    ("precision (k=3)", with_n("precision", "{:.3f}")),
    *anchor_rows("precision", "{:.3f}"),
    ("recall (k=3)", with_n("recall", "{:.3f}")),
    *anchor_rows("recall", "{:.3f}"),
    ("density (k=5; ~1 = like the test set)", with_n("density", "{:.3f}")),
    *anchor_rows("density", "{:.3f}"),
    ("coverage (k=5)", with_n("coverage", "{:.3f}")),
    *anchor_rows("coverage", "{:.3f}"),
    ("classifier score (max 10)", with_n("classifier_score")),
    ("class entropy (max 2.303)", num("sample_quality.class_entropy", "{:.3f}")),
    ("rarest class share (0.1 = even)", num("sample_quality.rarest_class_share", "{:.3f}")),
    ("k-NN accuracy on mu", num("latent.knn_accuracy", "{:.4f}")),
    ("linear probe accuracy on mu", num("latent.linear_probe_accuracy", "{:.4f}")),
    ("silhouette of mu by class", num("latent.silhouette", "{:.3f}")),
    ("prior holes: z ~ N(0, I) decoded to confidence < 0.5", num("latent_structure.prior_holes.share", "{:.3f}")),
    ("  the same share for test images", num("latent_structure.prior_holes.test_share", "{:.3f}")),
    ("KL(Gaussian fit || N(0, I)), of mu", num("latent_structure.on_mu.kl_gaussian_fit", "{:.3f}")),
    ("  of z ~ q(z|x) (aggregate posterior)", num("latent_structure.on_z.kl_gaussian_fit", "{:.3f}")),
    ("MMD^2 against N(0, I) (RBF), of mu", num("latent_structure.on_mu.mmd2", "{:.4f}")),
    ("  of z ~ q(z|x) (aggregate posterior)", num("latent_structure.on_z.mmd2", "{:.4f}")),
    ("interpolation path length (1: straight), lerp of mu", num("latent_structure.interpolation.path_length", "{:.3f}")),
    ("  largest jump", num("latent_structure.interpolation.largest_jump", "{:.3f}")),
    ("  frames of neither endpoint's class", num("latent_structure.interpolation.off_class_share", "{:.3f}")),
    ("DDPM bound -log p(x), nats/image", num("likelihood.nats")),
    ("  in bits/dim", num("likelihood.bits_per_dim", "{:.3f}")),
    ("evaluation seconds", num("seconds.total", "{:.0f}")),
]
# the rows holding likelihood numbers of the VAE's own protocol (split by protocol when the runs differ)
LIKELIHOOD_ROWS = {"-ELBO, nats/image", "  reconstruction", "  KL", "-log p(x), IWAE bound",
                   "  -ELBO on the same images"}


def protocol_of(m: dict) -> str:
    """The protocol of a metrics.json's likelihood (older files name none: bernoulli-grey or binarized)."""
    lik = m.get("likelihood") or {}
    if lik.get("protocol"):
        return lik["protocol"]
    if m.get("kind") == "ddpm":  # a DDPM evaluated before its bound existed
        return "-"
    return "binarized" if m.get("data_variant") == "binarized" else "bernoulli-grey"


def split_by_protocol(rows: list[tuple], metrics: list[dict]) -> list[tuple]:
    """`rows` where the runs' likelihoods are of one protocol; else each likelihood row once per protocol, blank
    ('-') for the runs of the others: numbers of different protocols never share a row."""
    protocols = sorted({protocol_of(m) for m in metrics if m.get("kind", "vae") == "vae"})
    if len(protocols) < 2:
        return rows
    out = []
    for label, cell in rows:
        if label not in LIKELIHOOD_ROWS:
            out.append((label, cell))
            continue
        for p in protocols:
            out.append((f"{label} [{p}]", lambda m, cell=cell, p=p: cell(m) if protocol_of(m) == p else "-"))
    return out


def table(names: list[str], metrics: list[dict], markdown: bool = False) -> str:
    """Rows of ROWS, one column per run; plain aligned text or a Markdown table."""
    return table_of(split_by_protocol(ROWS, metrics), names, metrics, markdown)


def table_of(rows: list[tuple], names: list[str], metrics: list[dict], markdown: bool = False) -> str:
    """`rows` (label, cell function), one column per metrics dict; plain aligned text or a Markdown table."""
    body = [[label, *(cell(m) for m in metrics)] for label, cell in rows]
    header = ["metric", *names]
    if markdown:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in body])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def cmd_evaluate(args) -> int:
    """Evaluate one run folder on its own dataset, write its metrics.json and print the table."""
    s = settings_with(QUICK if args.quick else DEFAULT_SETTINGS, iwae_k=args.k, iwae_images=args.iwae_images,
                      n_samples=args.samples, probe_train=args.probe_train, seed=args.seed,
                      bound_images=args.bound_images, bound_k=args.bound_k)
    data = lambda trained_on: load(dataset_for_run(trained_on, args.dataset), args.data_dir)  # noqa: E731
    clf = None
    if args.classifier:  # opened on the run's own dataset by evaluate_path's check, on the CPU (it is small)
        clf = reference.own(args.classifier)
    metrics = evaluate_path(args.run, s, args.device, data=data, clf=clf)
    print(table([Path(args.run).name or str(args.run)], [metrics], args.markdown))
    print(f"\ndata: {metrics['data_note']}\nwritten: {Path(args.run) / 'metrics.json'}")
    return 0


def mismatches(metrics: list[dict]) -> list[str]:
    """Why the runs' numbers do not compare: different data variants, datasets or reference classifiers."""
    notes = []
    if len({m.get("data_variant") for m in metrics}) > 1:
        notes.append("these runs use different data variants (grayscale vs binarized): their nats are not comparable")
    datasets = {m.get("dataset", DEFAULT) for m in metrics}
    if len(datasets) > 1:
        notes.append(f"these runs were trained on different datasets ({', '.join(sorted(datasets))}): no number "
                     "compares across them")
    sha = {(m.get("sample_quality") or {}).get("classifier", {}).get("sha256") for m in metrics} - {None}
    if len(sha) > 1:
        notes.append(f"these runs were scored with different reference classifiers (sha256 "
                     f"{', '.join(sorted(x[:12] for x in sha))}): their FD-LeNet, precision/recall, "
                     "density/coverage and classifier scores are not comparable")
    return notes


def cmd_compare(args) -> int:
    """Print the side-by-side table of several evaluated runs, with a note where they do not compare."""
    metrics = [read_metrics(r) for r in args.runs]
    print(table([Path(r).name or str(r) for r in args.runs], metrics, args.markdown))
    for note in mismatches(metrics):
        print(f"\nnote: {note}", file=sys.stderr)
    return 0


def cmd_classifier(args) -> int:
    """Show the pinned (or a given) reference classifier, or train one of your own with its statistics and anchors."""
    if args.action == "info":
        dataset = get(dataset_of(args))
        clf = reference.own(args.classifier, dataset=dataset) if args.classifier else reference.pinned(dataset)
        print(json.dumps({"folder": str(clf.folder), "pinned": clf.pinned, **clf.info}, indent=2))
        return 0
    out = Path(args.out) if args.out else None
    clf = pinning.train_reference(load(dataset_of(args), args.data_dir), pick_device(args.device), out, args.force)
    pinned = " (the pinned one)" if clf.sha256 == reference.PINNED.get(clf.dataset) else ""
    print(f"{dataset_title(clf.dataset)} classifier: test accuracy {clf.info['test_accuracy']:.2%} "
          f"(trained in {clf.info['train_seconds']:.0f} s), sha256 {clf.sha256}{pinned}\n  {clf.folder}\n"
          f"use it with --classifier {clf.folder}")
    return 0
