"""`vaelab reproduce` end to end, in process, on the tiny synthetic MNIST with a tiny profile."""

import json

from vaelab.cli import report as report_cli
from vaelab.cli.main import main

# the beta study's overrides, shrunk: a dense 16-32 VAE with latent 2, one epoch on the CPU; no evaluation
TINY_BETA = {"model.family": "dense", "model.arch": "16-32", "model.latent_dim": 2, "train.epochs": 1,
             "train.batch_size": 16, "train.device": "cpu"}
BETAS = [0.2, 0.5, 1.0, 2.0, 5.0]  # the report's, from the built-in beta spec


def test_reproduce_the_beta_study_writes_the_report(tmp_path, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("VAELAB_THREADS", "1")
    quick = report_cli.PROFILES["quick"]["beta"]
    monkeypatch.setitem(report_cli.PROFILES["quick"], "beta", (TINY_BETA, None, *quick[2:]))
    out = tmp_path / "repro"
    code = main(["reproduce", "--studies", "beta", "--seeds", "1", "--jobs", "1", "--together", "always",
                 "--out", str(out), "--data-dir", str(tiny_mnist)])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in stdout and str(out / "REPORT.md") in stdout

    runs = sorted(p for p in (out / "beta").iterdir() if p.is_dir())
    assert len(runs) == len(BETAS) and not (out / "dense").exists() and not (out / "ddpm").exists()
    neg_elbo = {}
    for run in runs:
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model"]["arch"] == "16-32" and cfg["train"]["epochs"] == 1
        (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert record["trained_with"] == len(BETAS)  # --together always: one stacked model
        neg_elbo[cfg["train"]["beta"]] = record["test_neg_elbo"]
    assert sorted(neg_elbo) == BETAS

    (section,) = json.loads((out / "report.json").read_text())
    assert section["study"] == "beta" and section["runs"] == len(BETAS) and len(section["body"]) == len(BETAS)
    beta_col, elbo_col = section["header"].index("beta"), section["header"].index("test -ELBO")
    shown = {float(row[beta_col]): row[elbo_col] for row in section["body"]}
    assert shown == {beta: f"{v:.2f}" for beta, v in neg_elbo.items()}  # each row shows its own run's number
    assert len(set(shown.values())) > 1  # and the betas trained to different numbers

    md = (out / "REPORT.md").read_text()
    assert "## The effect of beta (report 4)" in md and "**Verdict.**" in md
    assert "| " + " | ".join(section["header"]) + " |" in md
    for row in section["body"]:
        assert "| " + " | ".join(row) + " |" in md
    assert "![Rate-distortion: one point per beta](figures/beta_rate_distortion.png)" in md

    page = (out / "report.html").read_text()
    assert page.count("<tr>") == len(BETAS) + 1  # the beta table: header and one row per beta
    assert "The effect of beta (report 4)" in page and "src='figures" not in page
    images = page.count("src='data:image/png;base64,")
    assert images == 1 + 2 * len(BETAS)  # rate-distortion, then reconstructions and samples of each beta
    for run in runs:
        assert (run / "samples.png").stat().st_size > 1000 and (run / "reconstructions.png").stat().st_size > 1000


def test_the_report_note_names_the_beta_studys_actual_seeds():
    assert "the beta study with 1 seed." in report_cli.profile_note("full", 1)
    assert "the beta study with 3 seeds." in report_cli.profile_note("full", None)  # the profile's own
    assert "(beta, 2 seeds)" in report_cli.profile_note("quick", 2)


def test_the_full_reproduction_trains_the_cpu_ddpm_without_a_gpu(monkeypatch):
    import argparse

    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    local = argparse.Namespace(executor="local", gpus_per_run=None)
    assert report_cli.DDPM_PROFILE["full"] == "auto" and report_cli.DDPM_PROFILE["quick"] == "quick"
    assert report_cli.resolve_ddpm_profile("auto", local) == "cpu"
    assert report_cli.resolve_ddpm_profile("full", local) == "full"  # the annex's stays available
    ray_gpus = argparse.Namespace(executor="ray", gpus_per_run=0.25)  # the driver has none, the runs do
    assert report_cli.resolve_ddpm_profile("auto", ray_gpus) == "full"


def test_the_comparisons_n_follows_the_profile_the_ddpm_was_trained_with(tmp_path, monkeypatch):
    run = tmp_path / "ddpm" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"profile": "cpu"}))
    seen = []
    monkeypatch.setattr(report_cli, "is_done", lambda run, evaluate: True)
    monkeypatch.setattr(report_cli, "best_vae", lambda out: tmp_path / "conv" / "best")
    passed = []
    monkeypatch.setattr(report_cli, "compare",
                        lambda vae, ddpm, data, n, log, **kw: passed.append(kw) or seen.append(n) or {})
    monkeypatch.setattr(report_cli, "write", lambda result, out: (out / "comparison.json").write_text("{}"))
    monkeypatch.setattr(report_cli.represent, "write", lambda *a: None)
    monkeypatch.setattr(report_cli.represent, "measure", lambda *a: None)
    assert report_cli.ddpm_versus(tmp_path, "full", None) == []  # resumed: the run's own profile (cpu) counts
    (tmp_path / "ddpm" / "comparison.json").unlink()
    assert report_cli.ddpm_versus(tmp_path, "full", None, versus_n=123) == []
    assert seen == [report_cli.VERSUS_N["cpu"], 123]
    assert passed[0]["likelihood_vae"] == tmp_path / "ddpm" / report_cli.LIKELIHOOD_VAE  # the 8-bit footing's VAE


def test_the_likelihood_vae_is_the_reports_conv_vae_with_the_discretized_likelihood(tmp_path, monkeypatch):
    jobs = []
    ok = type("Outcome", (), {"ok": True})()
    monkeypatch.setattr(report_cli, "run_job", lambda executor, job: jobs.append(job) or ok)
    run = report_cli.likelihood_vae(tmp_path, 7, None, None, None)
    assert run == tmp_path / "ddpm" / report_cli.LIKELIHOOD_VAE and [j.kind for j in jobs] == ["train"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["likelihood"] == "discretized_logistic" and cfg["train"]["epochs"] == 7
    assert (cfg["model"]["family"], cfg["model"]["arch"], cfg["model"]["latent_dim"]) == ("conv", "32-64-128", 10)
    assert report_cli.likelihood_vae(tmp_path, 7, None, None, None) == run and len(jobs) == 2  # resumed, not redone


def test_report_export_copies_the_report_and_its_images_only(tmp_path, capsys):
    out, dest = tmp_path / "repro", tmp_path / "shared"
    (out / "figures").mkdir(parents=True)
    (out / "conv" / "run").mkdir(parents=True)
    (out / "figures" / "curve.png").write_bytes(b"png1")
    (out / "conv" / "run" / "samples.png").write_bytes(b"png2")
    (out / "conv" / "run" / "model.safetensors").write_bytes(b"weights")
    (out / "REPORT.md").write_text("# r\n![a curve](figures/curve.png)\ntext\n![s](conv/run/samples.png) "
                                   "![again](figures/curve.png)\n")
    assert main(["report", str(out), "--export", str(dest)]) == 0
    assert "REPORT.md and 2 other file(s)" in capsys.readouterr().out
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == ["REPORT.md", "conv/run/samples.png", "figures/curve.png"]
    assert (dest / "conv" / "run" / "samples.png").read_bytes() == b"png2"
    (out / "REPORT.md").write_text("![escape](../secret.png)\n")
    (tmp_path / "secret.png").write_bytes(b"x")
    assert main(["report", str(out), "--export", str(tmp_path / "d2")]) == 2
    assert "not a file inside" in capsys.readouterr().err
