"""The reproduction report: study folders -> DIR/REPORT.md and a self-contained DIR/report.html.

Reads saved results only (tables.py, and comparison.json of `vaelab versus`); the figures of the chosen
models are drawn from their saved weights by vae/figures.py, on the dataset each run was trained on.
Every image of the HTML is embedded as a data URI, so the file can be mailed. Every path either page prints
is relative to the report's folder (markdown.shown_path), never machine-absolute.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from vaelab import plots
from vaelab.data.registry import DEFAULT as DEFAULT_DATASET
from vaelab.data.registry import get as get_dataset
from vaelab.files import atomic_write_text, replacing
from vaelab.errors import VaelabError
from vaelab.data.images import Data, Loader, images_for
from vaelab.studies import tables as studies
from vaelab.studies import represent, versus
from vaelab.studies.markdown import md_table, shown_path
from vaelab.vae import explore, figures
from vaelab.vae.run import open_vae

TITLES = {"dense": "Dense VAEs: latent size x hidden sizes (report 2.6)",
          "conv": "Convolutional VAEs: latent size x architecture (report 3.3)",
          "beta": "The effect of beta (report 4)"}
REPRESENT_TITLE = "How each model represents digits"
VERSUS_TITLE = "VAE against DDPM (the report's proposed comparison)"


def curve_figure(rows: list[studies.Row], metric: str, ylabel: str, title: str, path: Path) -> Path:
    """A metric against latent size (log axis), one line per architecture, error bars over seeds."""
    fig, ax = plots.plt.subplots(figsize=(6.5, 4))
    for arch in dict.fromkeys(r.arch for r in rows):
        pts = [(r.latent, r.mean(metric), r.spread(metric) or 0.0) for r in rows if r.arch == arch
               and r.mean(metric) is not None]
        if pts:
            x, y, e = map(np.array, zip(*pts))
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=f"{rows[0].family} {arch}")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r.latent for r in rows}), labels=[str(v) for v in sorted({r.latent for r in rows})])
    ax.set_xlabel("latent size")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return plots.save(fig, path)


def rate_distortion(rows: list[studies.Row], path: Path) -> Path:
    """KL (rate) against reconstruction (distortion), one point per beta."""
    fig, ax = plots.plt.subplots(figsize=(6, 4.2))
    pts = [(r.mean("recon"), r.mean("kl"), r.beta) for r in rows if r.mean("recon") is not None]
    for recon, kl, beta in pts:
        ax.scatter(recon, kl, s=40)
        ax.annotate(f"beta {beta:g}", (recon, kl), textcoords="offset points", xytext=(6, 4))
    ax.plot([p[0] for p in sorted(pts)], [p[1] for p in sorted(pts)], alpha=0.4)
    ax.set_xlabel("distortion: reconstruction -log p(x|z), nats per image")
    ax.set_ylabel("rate: KL(q(z|x) || p(z)), nats per image")
    ax.set_title("Rate-distortion of the beta study (test set)")
    ax.grid(alpha=0.3)
    return plots.save(fig, path)


def loader_once(data: Data) -> Loader | None:
    """None (no figures) stays None; Images or a loader become a loader that loads each dataset once."""
    if data is None:
        return None
    loaded = {}

    def load_once(name: str):
        if name not in loaded:
            loaded[name] = images_for(name, data)
        return loaded[name]
    return load_once


def titles(names) -> str:
    """'MNIST', or 'Fashion-MNIST and MNIST': the titles of registered dataset names, sorted by name."""
    return " and ".join(get_dataset(n).title for n in sorted(set(names)) or [DEFAULT_DATASET])


def model_figures(run_dir: Path, data: Data, with_latent: bool = True) -> list[Path]:
    """The report's figures (samples, latent space, interpolation) for one run, drawn from its weights.

    Also writes the run's explorer.html: the run is open and its data loaded here, so it costs one t-SNE of
    2,000 points (about 6 s); the other runs get one with `vaelab explore RUN` (the report links them all)."""
    run = open_vae(run_dir, "cpu")
    data = images_for(run.cfg.dataset, data)  # the run's own dataset
    explore.write_explorer(run, data)
    paths = [figures.samples(run), figures.reconstructions(run, data)]
    if with_latent:
        paths.append(figures.latent(run, data)[0])
    paths.append(figures.interpolation(run, data))
    return paths


def study_section(study: str, sweep_dir: Path, fig_dir: Path, data) -> dict:
    """Table, curves, verdict and figures of one study; a dict the writers turn into Markdown/HTML."""
    rows = studies.collect(sweep_dir)
    header, body = studies.table(rows)
    images = []
    if study == "beta":
        images.append(("Rate-distortion: one point per beta", rate_distortion(rows, fig_dir / "beta_rate_distortion.png")))
        for r in sorted(rows, key=lambda r: r.beta):
            if data is not None and (r.runs[0] / "model.safetensors").exists():
                smp, rec = model_figures(r.runs[0], data, with_latent=False)[:2]
                images += [(f"beta {r.beta:g}: reconstructions", rec), (f"beta {r.beta:g}: samples", smp)]
    else:
        images.append(("Test -ELBO against latent size",
                       curve_figure(rows, "neg_elbo", "test -ELBO (nats per image)", f"{study}: -ELBO",
                                    fig_dir / f"{study}_elbo.png")))
        if any(r.mean("fd_lenet") is not None for r in rows):
            images.append(("FD-LeNet of samples against latent size",
                           curve_figure(rows, "fd_lenet", "FD-LeNet (lower is better)", f"{study}: FD-LeNet",
                                        fig_dir / f"{study}_fd.png")))
        arch, latent, beta = studies.REPORT_CHOICE[study]
        chosen = next((r for r in rows if r.key == (arch, latent, beta)), None)
        if chosen is not None and data is not None and (chosen.runs[0] / "model.safetensors").exists():
            names = ["samples", "reconstructions", "latent space", "interpolation"]
            for name, p in zip(names, model_figures(chosen.runs[0], data)):
                images.append((f"The report's choice ({studies.label(chosen)}): {name}", p))
    names = sorted({r.dataset for r in rows})
    title = TITLES[study] + ("" if names in ([], [DEFAULT_DATASET]) else f", on {titles(names)}")
    return {"study": study, "title": title, "datasets": names, "header": header, "body": body,
            "verdict": studies.verdict(study, rows), "images": images, "runs": sum(len(r.runs) for r in rows),
            "explorers": [(p.parent.name, f"{study}/{p.parent.name}/{p.name}")  # (run, link from the report)
                          for p in sorted(sweep_dir.glob(f"*/{explore.PAGE}"))]}


EXPLORERS = "Interactive latent explorers (relative links: keep this folder beside the report):"


def html_table(header: list[str], body: list[list[str]]) -> str:
    """An HTML table: header cells, then one row per list of cells (all escaped)."""
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")


def markdown(sections: list[dict], extra: list[str], out: Path, intro: str) -> str:
    """REPORT.md: tables as Markdown, images as links relative to `out`, the report's folder."""
    lines = ["# vaelab reproduction report", "", intro, ""]
    for s in sections:
        lines += [f"## {s['title']}", "", f"**Verdict.** {s['verdict']}", ""]
        lines += md_table(s["header"], s["body"]) + [""]
        for caption, p in s["images"]:
            lines += [f"![{caption}]({shown_path(p, out)})", f"*{caption}*", ""]
        if s.get("explorers"):
            lines += [EXPLORERS + " " + ", ".join(f"[{name}]({link})" for name, link in s["explorers"]), ""]
    return "\n".join(lines + extra) + "\n"


def data_uri(path: Path) -> str:
    """A PNG as a data: URI (the HTML carries its images)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}figure{display:inline-block;margin:.5em;vertical-align:top}
figure img{max-width:520px}figcaption{font-size:13px;color:#555}.verdict{background:#f6f8ff;padding:.6em 1em;
border-left:4px solid #4a6cf7}"""
# Checks, in the page itself, that every image decoded; the browser test reads the result from the DOM.
CHECK = """<script>window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}
else{console.error('image failed: '+imgs[i].alt);}}document.body.setAttribute('data-images',ok+'/'+imgs.length);});
</script>"""


def to_html(sections: list[dict], intro: str, extra_html: str = "") -> str:
    """report.html: one self-contained page."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vaelab report</title><style>{CSS}</style>"
             f"</head><body><h1>vaelab reproduction report</h1><p>{e(intro)}</p>"]
    for s in sections:
        parts.append(f"<h2>{e(s['title'])}</h2><p class='verdict'><b>Verdict.</b> {e(s['verdict'])}</p>"
                     + html_table(s["header"], s["body"]))
        parts += [f"<figure><img src='{data_uri(p)}' alt='{e(c)}'><figcaption>{e(c)}</figcaption></figure>"
                  for c, p in s["images"]]
        if s.get("explorers"):
            parts.append(f"<p>{e(EXPLORERS)} " + ", ".join(f"<a href='{e(link)}'>{e(name)}</a>"
                                                           for name, link in s["explorers"]) + "</p>")
    parts.append(extra_html + CHECK + "</body></html>")
    return "".join(parts)


def versus_section(folder: Path, base: Path | None = None) -> tuple[list[str], str]:
    """The VAE-against-DDPM section from comparison.json in `folder` (`vaelab versus`), as Markdown lines and HTML;
    paths relative to `base`, the report's folder (default: the folder above `folder`, as DIR/ddpm is in DIR)."""
    result = versus.read(folder)
    if result is None:
        return [], ""
    base = Path(folder).parent if base is None else Path(base)
    png = folder / "comparison.png"
    header, body = versus.table(result)
    text = versus.intro(result, base)
    lines = [f"## {VERSUS_TITLE}", "", text, "", *md_table(header, body), ""]
    page = f"<h2>{html.escape(VERSUS_TITLE)}</h2><p>{html.escape(text)}</p>{html_table(header, body)}"
    lik_lines = versus.likelihood_text(result)  # the likelihood table (8-bit footing) and its one-sentence verdict
    if lik_lines:
        lines += [*lik_lines[1:], ""]
        page += md_to_html("\n".join(lik_lines[1:]))
    if png.is_file():
        lines += [f"![samples side by side]({shown_path(png, base)})", ""]
        page += (f"<figure><img src='{data_uri(png)}' alt='VAE and DDPM samples'><figcaption>Samples side by side"
                 "</figcaption></figure>")
    return lines, page


def md_to_html(text: str) -> str:
    """The Markdown of representations.md as HTML: its tables as tables, other lines as paragraphs."""
    parts, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows += [] if set("".join(cells)) <= set("-") else [cells]  # skip the |---| rule
            continue
        if rows:
            parts.append(html_table(rows[0], rows[1:]))
            rows = []
        if line.strip() and not line.startswith("#"):
            parts.append(f"<p>{html.escape(line)}</p>")
    return "".join(parts)


def represent_section(folder: Path, base: Path | None = None) -> tuple[list[str], str]:
    """'How each model represents digits' from `vaelab represent`'s files in `folder`, as Markdown lines and HTML;
    paths relative to `base`, the report's folder (default: two folders above, as DIR/ddpm/represent is in DIR).
    Rendered from representations.json (representations.md, written for its own folder, where there is none)."""
    base = Path(folder).parent.parent if base is None else Path(base)
    result = represent.read(folder)
    md = folder / "representations.md"
    if result is not None:
        full = represent.markdown(result, base)
    elif md.is_file():
        full = md.read_text(encoding="utf-8")
    else:
        return [], ""
    text = "\n".join(full.splitlines()[1:])  # without its own title
    lines, page = [f"## {REPRESENT_TITLE}", text, ""], f"<h2>{html.escape(REPRESENT_TITLE)}</h2>{md_to_html(text)}"
    for png, what in (("probes.png", "linear-probe accuracy against t"), ("interpolation.png", "interpolations")):
        if (folder / png).is_file():
            lines += [f"![{what}]({shown_path(folder / png, base)})", ""]
            page += f"<figure><img src='{data_uri(folder / png)}' alt='{what}'><figcaption>{what}</figcaption></figure>"
    return lines, page


def build(out: Path, data: Data = None, profile_note: str = "", extra_md: list[str] | None = None,
          extra_html: str = "") -> tuple[Path, Path]:
    """Write REPORT.md and report.html for the study folders under `out` (data: Images or a loader for figures)."""
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    data = loader_once(data)
    sections = [study_section(s, out / s, fig_dir, data) for s in ("dense", "conv", "beta") if (out / s).is_dir()]
    names = [n for s in sections for n in s["datasets"]]
    intro = (f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {sum(s['runs'] for s in sections)} runs. "
             f"{profile_note} Numbers are per test image; -ELBO, reconstruction and KL in nats; FD-LeNet is the "
             f"Frechet distance in the features of vaelab's own {titles(names)} classifier (not FID); density "
             "and coverage (Naeem et al. 2020) stand beside precision and recall, which outliers fool; ± is the "
             "spread over seeds. A verdict names a best configuration by a sample metric only when the "
             "runner-up lies outside its 95% bootstrap interval (over each run's generated images; with "
             "several seeds, the span of the seeds' intervals).")
    versus_md, versus_html = versus_section(out / "ddpm", out)
    rep_md, rep_html = represent_section(out / "ddpm" / "represent", out)
    extra_md, extra_html = (extra_md or []) + versus_md + rep_md, extra_html + versus_html + rep_html
    md_path, html_path = out / "REPORT.md", out / "report.html"
    atomic_write_text(md_path, markdown(sections, extra_md or [], out, intro))
    atomic_write_text(html_path, to_html(sections, intro, extra_html))
    atomic_write_text(out / "report.json", json.dumps([{k: v for k, v in s.items() if k != "images"}
                                                       for s in sections], indent=1) + "\n")
    return md_path, html_path


IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")  # ![alt](path) in REPORT.md


def export(out: Path, dest: Path, html_page: bool = False) -> list[Path]:
    """Copy REPORT.md and the images it shows (not weights or states) from `out` into `dest`, keeping their
    relative paths, so a report can be shared or committed on its own; with html_page, report.html too."""
    out, dest = Path(out).resolve(), Path(dest)
    md = out / "REPORT.md"
    if not md.is_file():
        raise VaelabError(f"{out} holds no REPORT.md; run `vaelab report {out}` first")
    names = ["REPORT.md", *(["report.html"] if html_page else [])]
    for link in IMAGE_LINK.findall(md.read_text(encoding="utf-8")):
        src = (out / link).resolve()
        if not src.is_relative_to(out) or not src.is_file():
            raise VaelabError(f"REPORT.md links to {link}, which is not a file inside {out}")
        names.append(str(src.relative_to(out)))
    copied = []
    for name in dict.fromkeys(names):  # in order, once each
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing(target) as tmp:  # a failed copy leaves the previous export's file whole
            shutil.copyfile(out / name, tmp)
        copied.append(target)
    return copied
