"""Read the results of the report's studies from run folders and turn them into tables and verdicts.

Nothing here trains or evaluates: it reads config.json, metrics.jsonl and metrics.json that the
sweeps wrote, groups replicate seeds, and compares the configurations the way the report did,
but with numbers.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from vaelab.data.registry import DEFAULT as DEFAULT_DATASET
from vaelab.engine.runs import read_metrics
from vaelab.vae.networks import build_vae
from vaelab.nn import count_parameters


# The report's own choices, to check the numbers against (sections 2.6, 3.3 and 4)
REPORT_CHOICE = {"dense": ("256-512", 5, 1.0), "conv": ("32-64-128", 10, 1.0), "beta": ("32-64-128", 10, 1.0)}
PARAMS = {}  # (family, arch, latent) -> parameter count, filled lazily
# sample metrics: evaluate stores each with a 95% bootstrap interval over the generated images, '<name>_ci'
SAMPLE_METRICS = ("fd_lenet", "precision", "recall", "density", "coverage", "classifier_score")


def parameters(family: str, arch: str, latent: int) -> int:
    """Parameter count of a configuration (built once on the CPU, cached)."""
    key = (family, arch, latent)
    if key not in PARAMS:
        PARAMS[key] = count_parameters(build_vae(family, arch, latent))
    return PARAMS[key]


@dataclass
class Row:
    """One configuration of a study, its replicate seeds merged: each metric is a list over seeds."""

    family: str
    arch: str
    latent: int
    beta: float
    dataset: str = DEFAULT_DATASET  # the registry name of the data its runs were trained on
    runs: list[Path] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    intervals: dict[str, list[list[float]]] = field(default_factory=dict)  # metric -> [low, high] per seed that has one
    classifiers: set[str] = field(default_factory=set)  # sha256 of the reference classifier(s) its runs were scored with

    @property
    def key(self) -> tuple:
        """(arch, latent, beta): what REPORT_CHOICE names."""
        return (self.arch, self.latent, self.beta)

    def mean(self, name: str) -> float | None:
        """Mean over seeds of a metric, or None where no run has it."""
        v = self.values.get(name) or []
        return statistics.fmean(v) if v else None

    def spread(self, name: str) -> float | None:
        """Standard deviation over seeds (None with fewer than two)."""
        v = self.values.get(name) or []
        return statistics.stdev(v) if len(v) > 1 else None

    def band(self, name: str) -> tuple[float, float] | None:
        """The 95% interval of a sample metric: one seed's, or the union of the seeds' (and their values)."""
        ivs = self.intervals.get(name) or []
        if not ivs:
            return None
        ends = [x for iv in ivs for x in iv] + (self.values.get(name) or [])
        return min(ends), max(ends)


def run_values(run_dir: Path) -> dict[str, float | list[float]]:
    """The numbers of one run folder that the report shows, sample metrics' intervals as '<name>_ci' lists."""
    out = {}
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if history:
        out["train_seconds"] = history[-1]["seconds"]
        out["epochs"] = history[-1]["epoch"]
        for k in ("neg_elbo", "recon", "kl"):
            out[k] = history[-1][f"test_{k}"]  # overwritten below by the evaluation when there is one
    m = read_metrics(run_dir, required=False)
    if m is not None:
        lik, sq, lat = m.get("likelihood", {}), m.get("sample_quality", {}), m.get("latent", {})
        out.update({k: lik[k] for k in ("neg_elbo", "recon", "kl", "active_units") if k in lik})
        if "iwae" in lik:
            out["iwae_nll"] = lik["iwae"]["neg_log_likelihood"]
        out.update({k: sq[k] for k in SAMPLE_METRICS if k in sq})
        out.update({f"{k}_ci": list(sq[f"{k}_ci"]) for k in SAMPLE_METRICS if sq.get(f"{k}_ci")})
        out.update({k: lat[k] for k in ("knn_accuracy", "linear_probe_accuracy", "silhouette") if k in lat})
        out.update(structure_values(m.get("latent_structure") or {}))
    return out


def structure_values(st: dict) -> dict[str, float]:
    """The latent-structure numbers of a metrics.json (prior holes; KL and MMD^2 of mu and z against N(0, I))."""
    out = {}
    if "prior_holes" in st:
        out["prior_holes"] = st["prior_holes"]["share"]
        out["test_holes"] = st["prior_holes"]["test_share"]
    for on in ("mu", "z"):
        if f"on_{on}" in st:
            out[f"kl_fit_{on}"] = st[f"on_{on}"]["kl_gaussian_fit"]
            out[f"mmd_{on}"] = st[f"on_{on}"]["mmd2"]
    if "interpolation" in st:
        out["path_length"] = st["interpolation"]["path_length"]
        out["path_jump"] = st["interpolation"]["largest_jump"]
    return out


def classifier_of(run_dir: Path) -> set[str]:
    """{sha256 of the classifier that scored the run's samples}, or {} when it has no sample metrics."""
    m = read_metrics(run_dir, required=False) or {}
    sha = m.get("sample_quality", {}).get("classifier", {}).get("sha256")
    return {sha} if sha else set()


def classifier_note(rows: list[Row]) -> str:
    """A warning when the rows' sample metrics come from different reference classifiers ('' when they do not)."""
    shas = set().union(*(r.classifiers for r in rows)) if rows else set()
    if len(shas) < 2:
        return ""
    return (f"Warning: these runs were scored with {len(shas)} different reference classifiers (sha256 "
            f"{', '.join(sorted(x[:12] for x in shas))}): their sample metrics do not compare; re-run "
            "`vaelab evaluate` on the older ones to score all with the pinned classifier. ")


def collect(sweep_dir: Path) -> list[Row]:
    """Rows of a sweep folder, one per (arch, latent, beta, dataset), seeds merged, in a stable order."""
    rows: dict[tuple, Row] = {}
    for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / "metrics.jsonl").is_file()):
        cfg = json.loads((run_dir / "config.json").read_text())
        m, t = cfg["model"], cfg["train"]
        key = (m["family"], m["arch"], m["latent_dim"], t["beta"], cfg.get("dataset", DEFAULT_DATASET))
        row = rows.setdefault(key, Row(*key))
        row.runs.append(run_dir)
        row.classifiers |= classifier_of(run_dir)
        for name, value in run_values(run_dir).items():
            if name.endswith("_ci"):
                row.intervals.setdefault(name[:-3], []).append(value)
            else:
                row.values.setdefault(name, []).append(value)
    order = lambda r: (r.family, parameters(r.family, r.arch, 2), r.latent, r.beta)  # noqa: E731
    return sorted(rows.values(), key=order)


COLUMNS = [  # (metric, header, format); lower is better unless marked in HIGHER
    ("params", "parameters", "{:,.0f}"), ("neg_elbo", "test -ELBO", "{:.2f}"), ("recon", "recon", "{:.2f}"),
    ("kl", "KL", "{:.2f}"), ("active_units", "active units", "{:.0f}"), ("fd_lenet", "FD-LeNet", "{:.2f}"),
    ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"), ("knn_accuracy", "k-NN acc.", "{:.3f}"),
    ("prior_holes", "prior holes", "{:.3f}"), ("kl_fit_z", "KL(q(z) fit, N(0,I))", "{:.2f}"),
    ("mmd_z", "MMD² q(z), N(0,I)", "{:.4f}"), ("path_length", "path length", "{:.3f}"),
    ("train_seconds", "train s", "{:.0f}"),
]
HIGHER = {"precision", "recall", "density", "coverage", "classifier_score", "knn_accuracy", "active_units"}
FORMAT = {name: fmt for name, _, fmt in COLUMNS} | {"classifier_score": "{:.2f}"}
TITLE = {"fd_lenet": "FD-LeNet", "classifier_score": "classifier score"}  # how a verdict names a sample metric


def cell(row: Row, name: str, fmt: str) -> str:
    """A table cell: the mean over seeds, with +/- the spread when there are replicates."""
    if name == "params":
        return fmt.format(parameters(row.family, row.arch, row.latent))
    mean = row.mean(name)
    if mean is None:
        return "-"
    sd = row.spread(name)
    return fmt.format(mean) + (f" ± {fmt.format(sd)}" if sd is not None else "")


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a study's table."""
    header = ["model", "latent", "beta", "seeds"] + [h for _, h, _ in COLUMNS]
    body = [[f"{r.family} {r.arch}", str(r.latent), f"{r.beta:g}", str(len(r.runs))]
            + [cell(r, n, f) for n, _, f in COLUMNS] for r in rows]
    return header, body


def best(rows: list[Row], name: str) -> Row | None:
    """The row with the best mean of a metric (lowest, or highest for HIGHER metrics)."""
    scored = [r for r in rows if r.mean(name) is not None]
    if not scored:
        return None
    return (max if name in HIGHER else min)(scored, key=lambda r: r.mean(name))


def label(r: Row) -> str:
    """'conv 32-64-128, latent 10, beta 1': always with beta, so a verdict of the beta study names its run."""
    return f"{r.family} {r.arch}, latent {r.latent}, beta {r.beta:g}"


def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals [low, high] share a point (False where either is missing)."""
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def describe_gap(choice: Row, top: Row, name: str, unit: str) -> str:
    """'the best', or how far the report's choice is from the best on one metric, with the seed spread."""
    if choice is top:
        return "the best"
    gap = abs(choice.mean(name) - top.mean(name))
    sds = [s for s in (choice.spread(name), top.spread(name)) if s is not None]
    noise = f" (seed spread about {max(sds):.2f})" if sds else " (one seed: no spread measured)"
    if name in SAMPLE_METRICS and overlap(choice.band(name), top.band(name)):
        noise = noise[:-1] + "; within each other's 95% interval: no difference measured)"
    return f"{gap:.2f} {unit} {'below' if name in HIGHER else 'above'} the best{noise}"


def quoted(r: Row, name: str) -> str:
    """'conv 32-64-128, latent 10 (12.34 [12.01, 12.70])': a row's mean, seed spread and 95% interval."""
    fmt, band, sd = FORMAT.get(name, "{:.3f}"), r.band(name), r.spread(name)
    text = fmt.format(r.mean(name))
    if sd is not None:
        text += f" ± {fmt.format(sd)} over {len(r.values[name])} seeds"
    if band is not None:
        which = "the seeds' 95% intervals span" if sd is not None else "95% interval"
        text += f", {which} [{fmt.format(band[0])}, {fmt.format(band[1])}]"
    return f"{label(r)} ({text})"


def sample_verdict(rows: list[Row], name: str) -> tuple[Row | None, str]:
    """The best row by a sample metric and a sentence; the row is None where the runner-up's interval overlaps."""
    scored = sorted((r for r in rows if r.mean(name) is not None), key=lambda r: r.mean(name),
                    reverse=name in HIGHER)
    title = TITLE.get(name, name)
    if not scored:
        return None, ""
    top = scored[0]
    if len(scored) == 1:
        return top, f"Best samples by {title}: {quoted(top, name)}, the only configuration measured."
    second = scored[1]
    if top.band(name) is None or second.band(name) is None:
        return top, (f"Best samples by {title}: {quoted(top, name)}; runner-up {quoted(second, name)}; no 95% "
                     "intervals stored (evaluated before vaelab had them): re-run `vaelab evaluate` to tell "
                     "them apart.")
    if overlap(top.band(name), second.band(name)):
        return None, (f"By {title} there is no winner: the best, {quoted(top, name)}, and the runner-up, "
                      f"{quoted(second, name)}, are within each other's 95% interval.")
    return top, (f"Best samples by {title}: {quoted(top, name)}; the runner-up, {quoted(second, name)}, "
                 "lies outside its 95% interval.")


def economical(rows: list[Row], name: str = "neg_elbo", tolerance: float = 0.02) -> Row | None:
    """The smallest model whose metric is within `tolerance` (relative) of the best: the report's compromise."""
    top = best(rows, name)
    if top is None:
        return None
    near = [r for r in rows if r.mean(name) is not None and r.mean(name) <= top.mean(name) * (1 + tolerance)]
    return min(near, key=lambda r: parameters(r.family, r.arch, r.latent))


def compared(rows: list[Row], ref: Row, name: str, higher_means: str, lower_means: str) -> tuple[str, bool | None]:
    """'0.21 and 0.15 against 0.08' for rows against ref on a metric, and whether all rows lie above ref (None: mixed)."""
    above = [r.mean(name) > ref.mean(name) for r in rows]
    spreads = [r.spread(name) for r in [*rows, ref] if r.spread(name) is not None]
    spread = f"seed spread up to {max(spreads):.3g}" if spreads else "one seed: no spread measured"
    text = (" and ".join(FORMAT[name].format(r.mean(name)) for r in rows) + f" against {FORMAT[name].format(ref.mean(name))}"
            f" ({spread})")
    word = higher_means if all(above) else lower_means if not any(above) else "mixed"
    return f"{word}: {text}", (True if all(above) else False if not any(above) else None)


HOLDS = {True: "holds for every such beta", False: "does not hold", None: "holds only in part (mixed)"}


def structure_verdict(by_beta: list[Row]) -> list[str]:
    """Sentences testing the report's beta claims with prior holes and the aggregate posterior's KL/MMD to N(0, I)."""
    ref = next((r for r in by_beta if r.beta == 1.0), None)
    measured = [r for r in by_beta if r.mean("prior_holes") is not None and r.mean("kl_fit_z") is not None]
    low, high = [r for r in measured if r.beta < 1], [r for r in measured if r.beta > 1]
    if ref is None or ref not in measured or not low or not high:
        return ["Latent structure: not measured for beta 1 and both sides of it (re-run `vaelab evaluate` on the "
                "runs to get prior holes, KL and MMD against N(0, I))."]
    holes_low, more_holes = compared(low, ref, "prior_holes", "more holes", "fewer holes")
    holes_high, _ = compared(high, ref, "prior_holes", "more holes", "fewer holes")
    kl_high, kl_above = compared(high, ref, "kl_fit_z", "further from N(0, I)", "closer to N(0, I)")
    mmd_high, mmd_above = compared(high, ref, "mmd_z", "further from N(0, I)", "closer to N(0, I)")
    names = lambda rs: ", ".join(f"{r.beta:g}" for r in rs)  # noqa: E731
    regular = True if kl_above is False and mmd_above is False else None if False in (kl_above, mmd_above) else False
    return [f"Latent structure (share of z ~ N(0, I) decoded to an image the reference classifier labels with "
            f"confidence < 0.5; KL of a Gaussian fit and MMD² of z ~ q(z|x) against N(0, I)): beta {names(low)} "
            f"against beta 1, prior holes {holes_low}; beta {names(high)} against beta 1, prior holes {holes_high}, "
            f"KL {kl_high}, MMD² {mmd_high}.",
            f"The report's beta claims: beta < 1 leaving more holes {HOLDS[more_holes]}; beta > 1 giving a more regular latent (its aggregate "
            f"posterior closer to the prior) {HOLDS[regular]} by these numbers.", *smoothness_verdict(low, high, ref)]


def smoothness_verdict(low: list[Row], high: list[Row], ref: Row) -> list[str]:
    """A sentence on the interpolation path length (lerp of mu, in classifier features) against beta 1, if measured."""
    if any(r.mean("path_length") is None for r in (*low, *high, ref)):
        return []
    low_text, _ = compared(low, ref, "path_length", "longer", "shorter")
    high_text, _ = compared(high, ref, "path_length", "longer", "shorter")
    return [f"Interpolation between test digits of different classes (lerp of mu; path length in the reference "
            f"classifier's features, 1 = straight): beta < 1 against beta 1, {low_text}; beta > 1, {high_text}."]


def verdict(study: str, rows: list[Row]) -> str:
    """A short paragraph: what the numbers favour and whether the report's choice agrees."""
    arch, latent, beta = REPORT_CHOICE[study]
    choice = next((r for r in rows if r.key == (arch, latent, beta)), None)
    top_elbo, top_fd = best(rows, "neg_elbo"), best(rows, "fd_lenet")
    if top_elbo is None or choice is None:
        return "Not enough finished runs for a verdict."
    lines = [f"Lowest test -ELBO: {label(top_elbo)} ({top_elbo.mean('neg_elbo'):.2f} nats)."]
    fd_winner, fd_line = sample_verdict(rows, "fd_lenet")  # None: no winner by FD-LeNet, it singles out no one
    if fd_line:
        lines.append(fd_line)
    if study == "beta":
        by_beta = sorted(rows, key=lambda r: r.beta)
        trend = ", ".join(f"beta {r.beta:g}: recon {r.mean('recon'):.1f} / KL {r.mean('kl'):.1f}" for r in by_beta)
        lines.append(f"Rate-distortion: {trend}; raising beta trades reconstruction for a smaller KL, as the "
                     "report saw by eye.")
        fd_gap = describe_gap(choice, top_fd, "fd_lenet", "FD") if top_fd is not None else ""
        if fd_gap == "the best" and fd_winner is None:  # lowest, but the runner-up is within its interval
            fd_gap = "the lowest (not separated from the runner-up, as said)"
        lines.append(f"The report's beta = 1 is {describe_gap(choice, top_elbo, 'neg_elbo', 'nats')} by -ELBO"
                     + (f" and {fd_gap} by FD-LeNet." if fd_gap and choice.mean('fd_lenet') is not None else "."))
        agrees = choice is top_elbo or choice is fd_winner
        lines += structure_verdict(by_beta)
    else:
        eco = economical(rows)
        lines.append(f"Smallest model within 2% of the best -ELBO: {label(eco)} "
                     f"({parameters(eco.family, eco.arch, eco.latent):,} parameters, {eco.mean('neg_elbo'):.2f} nats).")
        lines.append(f"The report's choice, {label(choice)} ({parameters(choice.family, choice.arch, choice.latent):,} "
                     f"parameters), is {describe_gap(choice, top_elbo, 'neg_elbo', 'nats')} by -ELBO.")
        agrees = choice in (top_elbo, eco) or choice is fd_winner
        if not agrees and top_elbo.arch == choice.arch:
            lines.append(f"They agree with the report on the architecture ({choice.family} {choice.arch}) but favour "
                         f"latent {top_elbo.latent} over {choice.latent}.")
    lines.append("Verdict: the numbers " + ("agree with" if agrees else "do not single out") + " the report's choice.")
    return classifier_note(rows) + " ".join(lines)
