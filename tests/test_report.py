"""The reproduction report: verdicts from known numbers, and the HTML checked in a real headless browser."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vaelab.data.registry import FASHION_MNIST
from vaelab.data.images import Images, load
from vaelab.errors import DataError
from vaelab.studies import report, versus
from vaelab.studies import tables as studies

# Made-up results with a known answer: in the dense study 512-1024/latent 20 has the lowest -ELBO
def fake_run(folder: Path, family, arch, latent, beta, seed, neg_elbo, fd, fd_ci=None):
    run = folder / f"{family}-{arch}_z{latent}_beta{beta:g}_seed{seed}"
    run.mkdir(parents=True)
    run.joinpath("config.json").write_text(json.dumps(
        {"kind": "vae", "model": {"family": family, "arch": arch, "latent_dim": latent},
         "train": {"epochs": 2, "beta": beta, "seed": seed}}))
    run.joinpath("metrics.jsonl").write_text(json.dumps(
        {"epoch": 2, "seconds": 10.0, "test_neg_elbo": neg_elbo, "test_recon": neg_elbo - 20, "test_kl": 20.0}) + "\n")
    run.joinpath("metrics.json").write_text(json.dumps(
        {"format": "vaelab-metrics-1", "likelihood": {"neg_elbo": neg_elbo, "recon": neg_elbo - 25 * beta ** -0.5, "kl": 25 * beta ** -0.5,
                        "active_units": min(latent, 8)},
         "sample_quality": {"fd_lenet": fd, "precision": 0.8, "recall": 0.5, "density": 0.9, "coverage": 0.7,
                            **({"fd_lenet_ci": fd_ci} if fd_ci else {})},
         "latent": {"knn_accuracy": 0.9}}))


def make_reproduction(out: Path):
    for arch, base in (("128-256", 110.0), ("256-512", 105.0), ("512-1024", 104.0)):
        for latent in (2, 5, 20):
            for seed in (0, 1):
                nelbo = base - {2: 0, 5: 8, 20: 10}[latent] + 0.1 * seed
                fake_run(out / "dense", "dense", arch, latent, 1.0, seed, nelbo, fd=nelbo / 10)
    for beta in (0.2, 1.0, 5.0):
        fake_run(out / "beta", "conv", "32-64-128", 10, beta, 0, 100 + abs(beta - 1) * 3, fd=5 + abs(beta - 1))


def test_verdicts_from_known_numbers(tmp_path):
    make_reproduction(tmp_path)
    dense = studies.collect(tmp_path / "dense")
    assert len(dense) == 9 and all(len(r.runs) == 2 for r in dense)
    top = studies.best(dense, "neg_elbo")
    assert (top.arch, top.latent) == ("512-1024", 20)
    assert top.spread("neg_elbo") == pytest.approx(0.0707, abs=1e-3)
    eco = studies.economical(dense)  # best 94.05; within 2% (<= 95.93): 512-1024 z20 and 256-512 z20 (95.05)
    assert (eco.arch, eco.latent) == ("256-512", 20)
    v = studies.verdict("dense", dense)
    assert "512-1024, latent 20" in v and "report's choice, dense 256-512, latent 5" in v
    b = studies.verdict("beta", studies.collect(tmp_path / "beta"))
    assert "agree with" in b  # beta 1 has the best -ELBO by construction


def beta_study(folder: Path, fds: dict, seeds=(0,)):
    """A beta study whose -ELBO favours beta 1 and whose FD-LeNet values and intervals are `fds` (per seed)."""
    for beta, per_seed in fds.items():
        for seed, (fd, ci) in zip(seeds, per_seed):
            fake_run(folder, "conv", "32-64-128", 10, beta, seed, 100 + abs(beta - 1) * 3 + 0.1 * seed, fd, ci)
    return studies.collect(folder)


def test_a_sample_metric_names_no_winner_when_the_runner_up_is_within_its_interval(tmp_path):
    rows = beta_study(tmp_path / "overlap", {0.2: [(5.0, [4.6, 5.4])], 1.0: [(5.3, [4.9, 5.7])],
                                             5.0: [(9.0, [8.5, 9.5])]})
    v = studies.verdict("beta", rows)
    assert "By FD-LeNet there is no winner" in v and "within each other's 95% interval" in v
    assert "Best samples by FD-LeNet" not in v
    assert "beta 0.2 (5.00, 95% interval [4.60, 5.40])" in v and "latent 10, beta 1 (5.30, 95% interval [4.90, 5.70])" in v
    assert "0.30 FD above the best (one seed: no spread measured; within each other's 95% interval" in v
    assert studies.sample_verdict(rows, "fd_lenet")[0] is None


def test_a_sample_metric_names_the_best_when_the_runner_up_is_outside_its_interval(tmp_path):
    rows = beta_study(tmp_path / "apart", {0.2: [(5.0, [4.8, 5.2])], 1.0: [(6.0, [5.7, 6.3])],
                                           5.0: [(9.0, [8.5, 9.5])]})
    v = studies.verdict("beta", rows)
    assert "Best samples by FD-LeNet: conv 32-64-128, latent 10, beta 0.2 (5.00, 95% interval [4.80, 5.20])" in v
    assert "lies outside its 95% interval" in v and "no winner" not in v
    assert studies.sample_verdict(rows, "fd_lenet")[0].beta == 0.2


def test_several_seeds_compare_by_the_span_of_their_intervals(tmp_path):
    # each seed's interval is narrow and the means differ by 0.5, but beta 0.2's seeds reach 5.8: no winner
    rows = beta_study(tmp_path / "seeds", {0.2: [(5.0, [4.9, 5.1]), (5.7, [5.6, 5.8])],
                                           1.0: [(5.85, [5.75, 5.95]), (6.0, [5.9, 6.1])]}, seeds=(0, 1))
    top = next(r for r in rows if r.beta == 0.2)
    assert top.band("fd_lenet") == (4.9, 5.8) and top.spread("fd_lenet") == pytest.approx(0.495, abs=1e-3)
    v = studies.verdict("beta", rows)
    assert "no winner" in v and "5.35 ± 0.49 over 2 seeds, the seeds' 95% intervals span [4.90, 5.80]" in v
    rows = beta_study(tmp_path / "seeds-apart", {0.2: [(5.0, [4.9, 5.1]), (5.2, [5.1, 5.3])],
                                                 1.0: [(5.85, [5.75, 5.95]), (6.0, [5.9, 6.1])]}, seeds=(0, 1))
    assert "Best samples by FD-LeNet" in studies.verdict("beta", rows)


def test_study_tables_show_density_and_coverage(tmp_path):
    make_reproduction(tmp_path)
    header, body = studies.table(studies.collect(tmp_path / "dense"))
    assert header.index("density") == header.index("recall") + 1 and header[header.index("density") + 1] == "coverage"
    assert body[0][header.index("coverage")] == "0.700 ± 0.000"
    v = studies.verdict("dense", studies.collect(tmp_path / "dense"))  # metrics.json without intervals
    assert "no 95% intervals stored" in v


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here (make test installs Debian's chromium where it can)")


def test_html_report_in_headless_browser(tmp_path):
    make_reproduction(tmp_path)
    md, page = report.build(tmp_path, data=None, profile_note="Test data.")
    text = md.read_text()
    assert "## Dense VAEs" in text and "| dense 512-1024 | 20 |" in text and "![" in text
    html_text = page.read_text()
    assert "src='data:image/png;base64," in html_text and "src='figures" not in html_text  # self-contained
    browser = chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    ok, total = map(int, found.groups())
    assert total >= 3 and ok == total, f"{total - ok} image(s) failed to load"
    console_errors = [l for l in dom.stderr.splitlines() if "CONSOLE" in l and ("error" in l.lower())]
    assert not console_errors, console_errors
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


def test_best_vae_is_the_lowest_fd(tmp_path):
    from vaelab.cli.report import best_vae

    make_reproduction(tmp_path)
    best = best_vae(tmp_path)
    assert best.name == "conv-32-64-128_z10_beta1_seed0" and best.parent.name == "beta"  # fd 5.0, the lowest


def fake_comparison() -> dict:
    """A result of versus.compare with made-up numbers (and samples to show)."""
    rows = [{"generator": g, "n": 500, "images_per_second": ips, "ms_per_image": 1000 / ips, "fd_lenet": fd,
             "precision": 0.7, "recall": 0.4, "classifier_score": 8.5, "class_entropy": 2.2,
             "rarest_class_share": 0.07} for g, ips, fd in (("VAE", 5000.0, 31.25), ("DDIM-50", 40.0, 12.5))]
    rows[1].update({"fd_lenet_ci": [11.9, 13.1], "density": 0.91, "coverage": 0.88})  # the VAE's: saved before them
    return {"n": 500, "dataset": "mnist", "n_ref": 10000, "device": "cpu", "threads": 2, "hardware": "CPU",
            "vae": {"run": "beta/x", "parameters": 1000, "train_seconds": 60.0, "epochs": 3},
            "ddpm": {"run": "ddpm/run", "parameters": 2000, "train_seconds": 600.0, "epochs": 3},
            "rows": rows, "shown": {g: torch.rand(16, 1, 28, 28) for g in ("VAE", "DDIM-50")}}


def test_versus_section_is_built_from_comparison_json(tmp_path):
    make_reproduction(tmp_path)
    result = fake_comparison()
    versus.write(result, tmp_path / "ddpm")
    (tmp_path / "ddpm" / "comparison.md").unlink()  # the report never reads the Markdown
    md, page = report.build(tmp_path, data=None)
    html_text, text = page.read_text(), md.read_text()
    assert "<th>FD-LeNet</th>" in html_text and "<th>density</th>" in html_text
    assert "<td>DDIM-50</td><td>25.00</td><td>40.0</td><td>12.50 [11.90, 13.10] (N=500)</td>" in html_text
    assert "<td>VAE</td><td>0.20</td><td>5000.0</td><td>31.25 (N=500)</td>" in html_text  # saved without one
    assert "<td>0.910</td><td>0.880</td>" in html_text and "<td>0.400</td><td>-</td><td>-</td>" in html_text
    assert "alt='VAE and DDPM samples'" in html_text
    header, body = versus.table(result)
    assert "| " + " | ".join(body[1]) + " |" in text and "against the 10,000 MNIST test images" in text
    (tmp_path / "ddpm" / "comparison.json").unlink()  # no comparison: no section
    md, page = report.build(tmp_path, data=None)
    assert "DDIM-50" not in page.read_text() and "VAE against DDPM" not in md.read_text()


def test_the_versus_section_shows_the_likelihood_table_and_its_verdict(tmp_path):
    make_reproduction(tmp_path)
    row = lambda model, nats: {"model": model, "protocol": "discretized-8bit", "nats": nats,  # noqa: E731
                               "nats_ci": [nats - 2, nats + 2], "bits_per_dim": nats / 543.4, "n": 100,
                               "bits_per_dim_ci": [(nats - 2) / 543.4, (nats + 2) / 543.4], "interval": "95%"}
    result = {**fake_comparison(), "likelihood": {
        "protocol": "discretized-8bit", "protocol_note": "8-bit images", "note": "", "ddpm_estimator": "estimate",
        "rows": [row("VAE -ELBO", 700.0), row("VAE IWAE (k=100)", 690.0), row("DDPM bound", 600.0)]}}
    versus.write(result, tmp_path / "ddpm")
    md, page = report.build(tmp_path, data=None)
    text, html_text = md.read_text(), page.read_text()
    assert "| DDPM bound | discretized-8bit |" in text and "<td>DDPM bound</td>" in html_text
    assert versus.likelihood_verdict(result) in text and "classic contrast" in html_text


def test_model_figures_load_the_runs_own_dataset(tmp_path):
    from conftest import write_mnist
    from vaelab.cli.main import main

    data = write_mnist(tmp_path / "mnist", n_train=128, n_test=32)
    run = tmp_path / "run"
    assert main(["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "2", "--epochs", "1",
                 "--device", "cpu", "--out", str(run), "--data-dir", str(data)]) == 0
    asked = []
    loader = lambda name: asked.append(name) or load(name, data)  # noqa: E731
    paths = report.model_figures(run, loader, with_latent=False)
    assert asked == ["mnist"] and len(paths) == 3 and all(p.is_file() for p in paths)
    mnist = load("mnist", data)
    other = Images(mnist.train_x, mnist.train_y, mnist.test_x, mnist.test_y, mnist.source, FASHION_MNIST)
    with pytest.raises(DataError, match="trained on mnist"):
        report.model_figures(run, other, with_latent=False)


def test_the_report_prints_paths_relative_to_its_folder_and_timings_as_a_table(tmp_path):
    """Runs under the report's folder print as dense/..., ddpm/run; one outside it with '..'; never tmp_path."""
    from test_represent import fake_representations
    from vaelab.studies import represent

    out = tmp_path / "repro"
    make_reproduction(out)
    vae, ddpm = out / "dense" / "dense-512-1024_z20_beta1_seed0", tmp_path / "elsewhere" / "ddpm-run"
    result = fake_comparison()
    result["vae"]["run"], result["ddpm"]["run"] = str(vae), str(ddpm)  # compare() stores them absolute
    versus.write(result, out / "ddpm")
    rep = fake_representations(str(vae), str(ddpm))
    represent.write({**rep, "frames": {"VAE lerp": torch.rand(1, 3, 1, 28, 28)}}, out / "ddpm" / "represent")
    md, page = report.build(out, data=None)
    text, html_text = md.read_text(), page.read_text()
    for shown in (text, html_text):
        assert str(tmp_path) not in shown and "{'" not in shown and "['" not in shown  # no machine path, no repr
        assert "VAE dense/dense-512-1024_z20_beta1_seed0 (1,000 parameters" in shown
        assert "against DDPM ../elsewhere/ddpm-run (2,000 parameters" in shown
        assert "VAE dense/dense-512-1024_z20_beta1_seed0 against DDPM ../elsewhere/ddpm-run (MNIST)" in shown
        assert "Time per phase, measured on cpu with 2 thread(s):" in shown
    assert "| phase | seconds |\n|---|---|\n| probes | 47.1 |" in text and "| total | 63.9 |" in text
    assert "<tr><th>phase</th><th>seconds</th></tr><tr><td>probes</td><td>47.1</td></tr>" in html_text
    assert "![samples side by side](ddpm/comparison.png)" in text
    assert "![linear-probe accuracy against t](ddpm/represent/probes.png)" in text
    assert "![Test -ELBO against latent size](figures/dense_elbo.png)" in text


def test_report_links_an_image_outside_its_folder_relatively(tmp_path):
    outside = tmp_path / "shared" / "figure.png"
    section = {"title": "t", "verdict": "v", "header": ["a"], "body": [["1"]], "images": [("elsewhere", outside)]}
    text = report.markdown([section], [], tmp_path / "repro", "intro")
    assert "![elsewhere](../shared/figure.png)" in text and str(tmp_path) not in text
