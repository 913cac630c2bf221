"""VAE against DDPM, as the report's conclusion proposes: the same sample-quality metrics, sampling speed,
size and training time, side by side.

Both runs must be trained on the same dataset; every generator is scored by quality.sample_quality on
N images against the same test images with that dataset's reference classifier, so FD-LeNet values
compare only at equal N (the table states N). The result is data (comparison.json); `table` renders its
rows for the Markdown here and for the report's HTML alike. The runs' paths are stored absolute and printed
relative to the folder of the page that shows them (`base`), never machine-absolute.

Beside sample quality, a likelihood table on the 8-bit footing (protocol discretized-8bit): the VAE's -ELBO and
IWAE when its decoder is the discretized logistic, and the DDPM's variational bound, each in nats per image and
bits/dim with its interval and N, on the same first test images. A VAE of another protocol (bernoulli-grey,
binarized) is not put in that column: the table says which protocol it is on instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vaelab import plots
from vaelab.data.registry import DEFAULT as DEFAULT_DATASET
from vaelab.data.registry import get as get_dataset
from vaelab.data.images import Images
from vaelab.diffusion.sample import generate
from vaelab.diffusion.run import open_ddpm
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.errors import VaelabError
from vaelab.metrics import quality
from vaelab.metrics.evaluate import DEFAULT as DEFAULT_SETTINGS
from vaelab.metrics.evaluate import ddpm_likelihood, settings_with
from vaelab.metrics.likelihood import EIGHT_BIT, PROTOCOL_NOTES, fast_copy, iwae_log_px, likelihood, summary
from vaelab.metrics.reference import resolve
from vaelab.data.images import Data, images_for, to_unit
from vaelab.nn import count_parameters
from vaelab.studies.markdown import md_table, shown_path
from vaelab.vae.loss import protocol
from vaelab.vae.run import open_vae

# name -> (sampler, steps, eta): the DDPM's ways of sampling compared here. DDIM with eta = 0 is the
# deterministic sampler; eta = 1 adds DDPM-like noise at each of its 50 steps. On the 3-epoch quick
# DDPM, N = 500, seeds 0/1: FD-LeNet DDPM-1000 124.8; DDIM-50 eta 0 161.1/151.5; eta 1 118.6/127.3.
DDPM_SAMPLERS = {"DDPM-1000": ("ddpm", None, None), "DDIM-100": ("ddim", 100, 0.0), "DDIM-50": ("ddim", 50, 0.0),
                 "DDIM-50-eta1": ("ddim", 50, 1.0)}
LIKELIHOOD_IMAGES, LIKELIHOOD_IWAE_K, LIKELIHOOD_BOUND_K = 1000, 100, 10  # the likelihood table's defaults
INTERVALS = ("fd_lenet", "precision", "recall", "density", "coverage", "classifier_score")  # each with '<key>_ci'


def number(key: str, fmt: str, n: bool = False):
    """A cell of a row: the number, its 95% interval where the row has one, and N when `n`; '-' if absent."""
    def cell(r: dict) -> str:
        if r.get(key) is None:
            return "-"
        ci = r.get(f"{key}_ci")
        band = f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""
        return fmt.format(r[key]) + band + (f" (N={r['n']})" if n and "n" in r else "")
    return cell


# the table: (header, cell of a row); comparisons saved before density/coverage show '-' there
COLUMNS = [("generator", lambda r: str(r["generator"])), ("ms per image", number("ms_per_image", "{:.2f}")),
           ("images/s", number("images_per_second", "{:.1f}")), ("FD-LeNet", number("fd_lenet", "{:.2f}", n=True)),
           ("precision", number("precision", "{:.3f}")), ("recall", number("recall", "{:.3f}")),
           ("density", number("density", "{:.3f}")), ("coverage", number("coverage", "{:.3f}")),
           ("classifier score", number("classifier_score", "{:.2f}")),
           ("class entropy", number("class_entropy", "{:.3f}")),
           ("rarest class share", number("rarest_class_share", "{:.3f}"))]


@torch.no_grad()
def vae_generate(run, n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """n VAE samples (pixel means of decoded z ~ N(0, I)) in [0, 1] on the CPU, and images per second."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, run.cfg.model.latent_dim, generator=g)
    t0 = time.perf_counter()
    x = torch.cat([run.model.decode(z[i:i + 1000].to(run.device)).cpu() for i in range(0, n, 1000)])
    return x, n / (time.perf_counter() - t0)


def train_seconds(history: list[dict]) -> float | None:
    """Total training seconds recorded in a run's history."""
    return history[-1].get("seconds") if history else None


def score(name: str, images: torch.Tensor, speed: float, data: Images, clf, device, seed: int = 0) -> dict:
    """Sample-quality numbers of one generator (with their 95% intervals, seeded), with its speed."""
    sq = quality.sample_quality(images, data, device, n_ref=len(data.test_x), clf=clf, with_anchors=False, seed=seed)
    keep = (*INTERVALS, *(f"{k}_ci" for k in INTERVALS), "class_entropy", "rarest_class_share", "interval")
    return {"generator": name, "n": len(images), "images_per_second": speed,
            "ms_per_image": 1000.0 / speed, **{k: sq[k] for k in keep}}


@torch.no_grad()
def likelihoods(vae, ddpm, data: Images, n: int = LIKELIHOOD_IMAGES, iwae_k: int = LIKELIHOOD_IWAE_K,
                bound_k: int = LIKELIHOOD_BOUND_K, seed: int = 0) -> dict:
    """The likelihood table's data: rows of one protocol (discretized-8bit) on the first n test images."""
    proto = protocol(vae.cfg.train.likelihood, vae.cfg.train.binarize)
    rows, note = [], ""
    if proto == EIGHT_BIT:
        x = to_unit(data.test_x[:n]).to(vae.device)
        fast = fast_copy(vae.model)
        _, _, neg_elbo = likelihood(fast, x, seed, px=vae.cfg.train.likelihood)
        rows.append({"model": "VAE -ELBO", **summary(neg_elbo, proto)})
        log_px = iwae_log_px(fast, x, iwae_k, seed + 1, px=vae.cfg.train.likelihood)
        rows.append({"model": f"VAE IWAE (k={iwae_k})", **summary(-log_px, proto)})
    else:
        note = (f"The VAE's likelihood is on another protocol, {proto} ({PROTOCOL_NOTES[proto]}), so it is not in "
                "this column; a VAE trained with the discretized_logistic likelihood is.")
    bound = ddpm_likelihood(ddpm, data, settings_with(DEFAULT_SETTINGS, bound_images=n, bound_k=bound_k, seed=seed))
    rows.append({"model": f"DDPM bound ({bound['k'] or 'all'} steps t per image)",
                 **{k: bound[k] for k in ("protocol", "nats", "nats_ci", "bits_per_dim", "bits_per_dim_ci", "n",
                                          "interval")}})
    return {"protocol": EIGHT_BIT, "protocol_note": PROTOCOL_NOTES[EIGHT_BIT], "vae_protocol": proto, "note": note,
            "ddpm_estimator": bound["estimator"], "rows": rows}


def compare(vae_dir: Path, ddpm_dir: Path, data: Data = None, n: int = 1000, samplers=tuple(DDPM_SAMPLERS),
            device: str = "auto", seed: int = 0, log=print, data_dir=None,
            likelihood_images: int = LIKELIHOOD_IMAGES, iwae_k: int = LIKELIHOOD_IWAE_K,
            bound_k: int = LIKELIHOOD_BOUND_K, likelihood_vae: Path | None = None) -> dict:
    """Score the VAE and each DDPM sampler on n images of their one dataset, and (likelihood_images > 0) both
    likelihoods on that many test images; the comparison (and samples shown)."""
    # data: that dataset's Images, a loader (name -> Images), or None to load it from data_dir
    vae, ddpm = open_vae(vae_dir, device), open_ddpm(ddpm_dir, device)
    if vae.cfg.dataset != ddpm.cfg.dataset:
        raise VaelabError(f"the VAE {vae_dir} was trained on {get_dataset(vae.cfg.dataset).title} and the DDPM "
                          f"{ddpm_dir} on {get_dataset(ddpm.cfg.dataset).title}: compare runs of one dataset")
    data = images_for(vae.cfg.dataset, data, data_dir)
    clf = resolve(data, vae.device)
    rows, shown = [], {}
    images, speed = vae_generate(vae, n, seed)
    rows.append(score("VAE", images, speed, data, clf, vae.device, seed))
    shown["VAE"] = images[:16]
    for name in samplers:
        sampler, steps, eta = DDPM_SAMPLERS[name]
        log(f"sampling {n} images with {name}")
        images, speed = generate(ddpm, n, sampler, steps, eta=eta, seed=seed)
        rows.append(score(name, images, speed, data, clf, ddpm.device, seed))
        shown[name] = images[:16]
    lik = None
    if likelihood_images > 0:
        log(f"likelihoods on the first {likelihood_images} test images (8-bit, discretized)")
        lik_vae = open_vae(likelihood_vae, device) if likelihood_vae is not None else vae
        if lik_vae.cfg.dataset != vae.cfg.dataset:
            raise VaelabError(f"the likelihood VAE {likelihood_vae} was trained on another dataset than {vae_dir}")
        lik = likelihoods(lik_vae, ddpm, data, likelihood_images, iwae_k, bound_k, seed)
        lik["vae_run"] = str(Path(lik_vae.path).resolve())
    return {"n": n, "dataset": data.dataset.name, "n_ref": len(data.test_x), "classifier": clf.describe(),
            "device": str(vae.device), "threads": torch.get_num_threads(),
            "hardware": torch.cuda.get_device_name() if vae.device.type == "cuda" else "CPU",
            "vae": {"run": str(Path(vae_dir).resolve()), "parameters": count_parameters(vae.model),
                    "train_seconds": train_seconds(vae.history), "epochs": len(vae.history)},
            "ddpm": {"run": str(Path(ddpm_dir).resolve()), "parameters": count_parameters(ddpm.model),
                     "train_seconds": train_seconds(ddpm.history), "epochs": len(ddpm.history)},
            "rows": rows, "shown": shown, **({"likelihood": lik} if lik else {})}


def title_of(result: dict) -> str:
    """The title of the result's dataset (comparisons written before datasets were recorded are MNIST)."""
    return get_dataset(result.get("dataset", DEFAULT_DATASET)).title


def intro(result: dict, base: Path | None = None) -> str:
    """One sentence: which runs (their paths relative to `base`, the folder of the page that prints it; default
    the current directory), their size and training time, N, the reference set and the hardware."""
    v, d = result["vae"], result["ddpm"]
    return (f"VAE {shown_path(v['run'], base)} ({v['parameters']:,} parameters, {v['epochs']} epochs, "
            f"{v['train_seconds'] or 0:.0f} s of training) against DDPM {shown_path(d['run'], base)} "
            f"({d['parameters']:,} parameters, {d['epochs']} epochs, {d['train_seconds'] or 0:.0f} s). "
            f"N = {result['n']} images each against the {result.get('n_ref', 10000):,} {title_of(result)} test "
            f"images; {result['hardware']}, {result['threads']} thread(s).{interval_note(result)}")


def interval_note(result: dict) -> str:
    """' [low, high]: ...' naming the rows' intervals, or '' for comparisons saved without them."""
    what = next((r["interval"] for r in result["rows"] if "interval" in r), None)
    return "" if what is None else f" [low, high]: {what['level']:.0%} interval, {what['method']}."


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table (one row per generator): the one renderer of Markdown and HTML."""
    header = [h for h, _ in COLUMNS]
    body = [[cell(r) for _, cell in COLUMNS] for r in result["rows"]]
    return header, body


def likelihood_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the likelihood table (one protocol, discretized-8bit); no rows when none was measured."""
    lik = result.get("likelihood") or {"rows": []}
    header = ["model", "protocol", "nats per image", "bits/dim"]
    body = [[r["model"], r["protocol"], number("nats", "{:.1f}", n=True)(r), number("bits_per_dim", "{:.4f}")(r)]
            for r in lik["rows"]]
    return header, body


def likelihood_text(result: dict) -> list[str]:
    """The likelihood table's Markdown lines, its protocol and note ([] for comparisons without one)."""
    lik = result.get("likelihood")
    if not lik:
        return []
    notes = [f"Likelihood, protocol {lik['protocol']}: {lik['protocol_note']}. DDPM: {lik['ddpm_estimator']}. "
             f"[low, high]: {lik['rows'][-1]['interval']}.", *([lik["note"]] if lik["note"] else [])]
    verdict = likelihood_verdict(result)
    return ["", *notes, "", *md_table(*likelihood_table(result)), *(["", verdict] if verdict else [])]


def likelihood_verdict(result: dict) -> str:
    """One sentence on the classic contrast (better samples, no better likelihood), from the likelihood table and
    the sample-quality rows ('' when the table has no VAE row on the 8-bit footing)."""
    lik = result.get("likelihood") or {}
    vae_rows = [r for r in lik.get("rows", []) if r["model"].startswith("VAE")]
    if not vae_rows:
        return ""
    vae, ddpm = min(vae_rows, key=lambda r: r["nats"]), lik["rows"][-1]
    apart = vae["nats_ci"][1] < ddpm["nats_ci"][0] or ddpm["nats_ci"][1] < vae["nats_ci"][0]
    fd = {r["generator"]: r.get("fd_lenet") for r in result.get("rows", [])}
    best_ddpm = min((v, k) for k, v in fd.items() if k != "VAE" and v is not None) if len(fd) > 1 else None
    better_samples = best_ddpm is not None and fd.get("VAE") is not None and best_ddpm[0] < fd["VAE"]
    better_lik = ddpm["nats"] < vae["nats"] and apart
    holds = better_samples and not better_lik
    return (f"On the 8-bit footing the DDPM's bound is {ddpm['bits_per_dim']:.3f} bits/dim against "
            f"{vae['bits_per_dim']:.3f} for the VAE ({vae['model']}; "
            f"{'separated' if apart else 'not separated'} by their 95% intervals), and its samples score "
            f"{'better' if better_samples else 'no better'} by FD-LeNet: the classic contrast (better samples, "
            f"no better likelihood) {'holds' if holds else 'does not hold'} here.")


def markdown(result: dict, base: Path | None = None) -> str:
    """The comparison as Markdown tables (with the hardware it ran on): sample quality, then likelihood; paths
    relative to `base`, the folder the Markdown is written to (default: the current directory)."""
    return "\n".join([intro(result, base), "", *md_table(*table(result)), *likelihood_text(result)]) + "\n"


def figure(result: dict, path: Path) -> Path:
    """Samples side by side: one row of 16 per generator."""
    names = list(result["shown"])
    images = np.concatenate([result["shown"][k].numpy()[:, 0] for k in names])
    return plots.image_grid(images, len(names), 16, f"VAE and DDPM samples ({title_of(result)}), side by side",
                            path, row_labels=names, cell=0.7)


def write(result: dict, out: Path) -> tuple[Path, Path, Path]:
    """comparison.json (the result), comparison.md (rendered from it) and comparison.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if k != "shown"}
    atomic_write_text(out / "comparison.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", markdown(data, out))
    return out / "comparison.json", out / "comparison.md", figure(result, out / "comparison.png")


def read(folder: Path) -> dict | None:
    """The comparison.json in `folder`, or None where there is none (or it is unreadable, with a note)."""
    path = Path(folder) / "comparison.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        table(result)  # every key the renderers need is there
        likelihood_text(result)
        intro(result)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, VaelabError) as e:
        print(f"note: {path} is not a readable comparison ({type(e).__name__}: {e}); left out", file=sys.stderr)
        return None
    return result
