"""Probes, UNet features, interpolation paths and `vaelab represent` (known answers, tiny models)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vaelab.cli.main import main
from vaelab.data.registry import MNIST
from vaelab.data.images import Images
from vaelab.diffusion.config import DDPMConfig, DDPMTrainConfig, UNetConfig
from vaelab.diffusion.schedule import NoiseSchedule
from vaelab.diffusion.train import train_ddpm
from vaelab.diffusion.networks import UNet
from vaelab.engine.runs import prepare_new, write_config
from vaelab.metrics import features
from vaelab.studies import represent as study
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.train import train_vae

torch.set_num_threads(1)
REAL_RUNS = Path(__file__).resolve().parents[1] / "runs"


def clusters(n: int, seed: int, separable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """n labelled points in 10 classes: class c at 10 e_c plus small noise (separable), or pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, 10, generator=g)
    return (x * 0.3 + 10 * torch.nn.functional.one_hot(y, 10) if separable else x), y


def test_probe_reaches_100_percent_on_separable_features_and_chance_on_noise():
    (a, ya), (b, yb) = clusters(400, 0, True), clusters(200, 1, True)
    out = features.probe(a, ya, b, yb, n_train=300)
    assert out["linear_probe"] == 1.0 and out["knn"] == 1.0 and out["linear_probe_spread"] == 0.0
    (a, ya), (b, yb) = clusters(1000, 2, False), clusters(2000, 3, False)
    out = features.probe(a, ya, b, yb, n_train=800)
    assert 0.05 < out["linear_probe"] < 0.15 and 0.05 < out["knn"] < 0.15, out
    assert out["seeds"] == [0, 1, 2] and out["train"] == 800 and out["test"] == 2000
    with pytest.raises(ValueError):
        features.probe(a, ya, b, yb, n_train=1001)


def test_path_length_of_a_straight_line_is_one():
    start, end = torch.randn(8), torch.randn(8)
    r = torch.linspace(0, 1, 9)[:, None]
    line = (1 - r) * start + r * end  # (9, 8)
    probs = torch.zeros(9, 10)
    probs[:, 3] = 0.9
    probs[4, 3], probs[4, 5] = 0.2, 0.6  # the middle frame looks like a 5: neither endpoint's class
    probs[8, 3], probs[8, 7] = 0.1, 0.8  # the last frame is a 7: the other endpoint's class
    m = features.path_metrics(line, probs, (3, 7))
    assert m["path_length"] == pytest.approx(1.0, abs=1e-6)
    assert m["largest_jump"] == pytest.approx(1 / 8, abs=1e-6)
    assert m["off_class_share"] == pytest.approx(1 / 9) and m["min_confidence"] == pytest.approx(0.6)
    detour = line.clone()
    detour[4] += 5 * torch.randn(8, generator=torch.Generator().manual_seed(0))
    assert features.path_metrics(detour, probs, (3, 7))["path_length"] > 1.5


def test_slerp_ends_at_both_endpoints_and_keeps_the_norm_of_equal_norm_ends():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    p = features.slerp(a, b, torch.linspace(0, 1, 5)[:, None])
    torch.testing.assert_close(p[0], a)
    torch.testing.assert_close(p[-1], b)
    torch.testing.assert_close(p.norm(dim=1), torch.full((5,), 3.0))


def test_unet_features_pool_every_block_and_leave_no_hook():
    torch.manual_seed(0)
    net = UNet("4-8-16", 8).eval()
    x0 = torch.rand(5, 1, 28, 28) * 2 - 1
    f = features.unet_features(net, NoiseSchedule("linear", 100), x0, t=10, seed=0, batch=2)
    assert list(f) == ["enc1", "enc2", "bottleneck", "dec1", "dec2"]
    assert [tuple(v.shape) for v in f.values()] == [(5, 4), (5, 8), (5, 16), (5, 8), (5, 4)]
    again = features.unet_features(net, NoiseSchedule("linear", 100), x0, t=10, seed=0)
    torch.testing.assert_close(again["bottleneck"], f["bottleneck"])  # the same noise whatever the batch
    assert not any(getattr(net, b)._forward_hooks for b in f)


def synthetic_mnist(n_train: int, n_test: int, seed: int = 0) -> Images:
    """Class-dependent images: digit c lights up row band c, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 10
        x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
        for c in range(10):
            x[y == c, :, 2 * c + 4:2 * c + 7, 4:24] += 0.7
        return (x.clamp(0, 1) * 255).to(torch.uint8), y

    (trx, tr_y), (tex, te_y) = make(n_train), make(n_test)
    return Images(trx, tr_y, tex, te_y, source=Path("synthetic"), dataset=MNIST)


def tiny_vae_run(folder: Path, data: Images) -> Path:
    """A dense VAE run (latent 3) trained one epoch on `data`."""
    cfg = VAEConfig(dataset="mnist", model=VAEModelConfig("dense", "16-32", 3),
                    train=VAETrainConfig(epochs=1, batch_size=64, device="cpu")).validate()
    prepare_new(folder)
    write_config(folder, cfg)
    train_vae(folder, cfg, data, log=lambda m: None)
    return folder


def tiny_ddpm_run(folder: Path, data) -> Path:
    """A DDPM run of a tiny UNet trained one epoch on `data`."""
    cfg = DDPMConfig(profile="test", model=UNetConfig(widths="4-8", time_dim=8),
                     train=DDPMTrainConfig(epochs=1, batch_size=64, device="cpu", warmup_steps=1))
    prepare_new(folder)
    write_config(folder, cfg)
    train_ddpm(folder, cfg, data, log=lambda m: None)
    return folder


def test_measure_and_write_on_tiny_runs(tmp_path):
    data = synthetic_mnist(n_train=200, n_test=120)
    vae, ddpm = tiny_vae_run(tmp_path / "vae", data), tiny_ddpm_run(tmp_path / "ddpm", data)
    b = study.Budget(pool=100, train=80, test=60, ts=(1, 20), pairs=2, frames=4, steps=5, invert_steps=(2, 5),
                     invert_images=3)
    result = study.measure(vae, ddpm, data, b, "cpu", log=lambda m: None)
    assert [r["model"] for r in result["probes"]] == ["VAE", "VAE"] + ["DDPM"] * 6
    assert {r["block"] for r in result["probes"][2:]} == {"enc1", "bottleneck", "dec1"}
    assert [r["steps"] for r in result["inversion"]] == [2, 5]
    assert set(result["interpolation"]) == {"VAE lerp", "VAE slerp", "DDPM slerp of DDIM x_T"}
    assert result["frames"]["VAE lerp"].shape == (2, 4, 1, 28, 28)
    paths = study.write(result, tmp_path / "out")
    saved = json.loads(paths[0].read_text())
    assert saved["format"] == study.FORMAT and "frames" not in saved
    assert "| VAE | mu |" in paths[1].read_text() and all(p.is_file() for p in paths)
    md = paths[1].read_text()  # the runs named from the Markdown's folder, the timings as a table
    assert "VAE ../vae against DDPM ../ddpm" in md and str(tmp_path) not in md and "| phase | seconds |" in md


def test_the_cli_on_tiny_runs_writes_its_files_and_prints_the_table(tmp_path, tiny_mnist, capsys):
    """`vaelab represent VAE DDPM --quick` end to end: the four files, the table on stdout, progress on stderr."""
    from vaelab.data.images import load
    data = load("mnist", tiny_mnist)
    vae, ddpm = tiny_vae_run(tmp_path / "vae", data), tiny_ddpm_run(tmp_path / "ddpm", data)
    assert main(["represent", str(vae), str(ddpm), "--out", str(tmp_path / "rep"), "--quick",
                 "--data-dir", str(tiny_mnist), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("#") and "| VAE | mu |" in out and "s in all" in out
    assert "probes" in err.lower() and "| VAE |" not in err  # progress lines stay out of the table
    saved = json.loads((tmp_path / "rep" / "representations.json").read_text())
    assert saved["budget"]["ts"] == list(study.QUICK.ts) and {r["model"] for r in saved["probes"]} == {"VAE", "DDPM"}
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"representations.json", "representations.md",
                                                              "probes.png", "interpolation.png"}
    assert main(["represent", str(ddpm), str(vae), "--out", str(tmp_path / "bad"), "--quick",
                 "--data-dir", str(tiny_mnist)]) == 4  # the runs swapped: one clear error, no traceback
    err = capsys.readouterr().err
    assert "holds a DDPM run, not a VAE" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_RUNS / "conv10").is_dir() or not os.environ.get("VAELAB_DATA"),
                    reason="needs runs/conv10, runs/ddpm-quick-s0 and the real MNIST files")
def test_cli_quick_on_the_real_runs(tmp_path, capsys):
    assert main(["represent", str(REAL_RUNS / "conv10"), str(REAL_RUNS / "ddpm-quick-s0"), "--out", str(tmp_path),
                 "--quick"]) == 0
    assert "| VAE | mu |" in capsys.readouterr().out and (tmp_path / "interpolation.png").is_file()


def test_help_states_the_cost(capsys):
    # measured costs moved from --help to the docs page that --help points to (the front-door issue)
    with pytest.raises(SystemExit):
        main(["represent", "--help"])
    text = capsys.readouterr().out
    docs = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| `vaelab represent` |"))
    assert "--quick" in text and "cost" in text and "docs/commands.md#represent" in text
    assert "about 15 s" in row and "## What the commands cost" in docs


def test_the_report_section_renders_representations_md(tmp_path):
    from vaelab.studies.report import md_to_html, represent_section
    folder = tmp_path / "ddpm" / "represent"
    folder.mkdir(parents=True)
    assert represent_section(folder) == ([], "")  # nothing measured: no section
    (folder / "representations.md").write_text("# How each model represents digits\n\nintro line\n\n"
                                                "| a | b |\n|---|---|\n| 1 | 2 |\n")
    lines, page = represent_section(folder)
    assert lines[0] == "## How each model represents digits" and "| 1 | 2 |" in "\n".join(lines)
    assert "<p>intro line</p>" in page and page.count("<table") == 1 and "<td>2</td>" in md_to_html("| a | b |\n| 1 | 2 |")


def fake_representations(vae: str, ddpm: str) -> dict:
    """A saved result of represent.measure with made-up numbers, the runs at `vae` and `ddpm`."""
    probe_row = {"linear_probe": 0.9, "linear_probe_spread": 0.01, "knn": 0.8, "knn_spread": 0.02, "silhouette": 0.05,
                 "seeds": [0, 1, 2], "features": 16}
    path = {"path_length": 1.5, "largest_jump": 0.3, "mean_confidence": 0.95, "min_confidence": 0.7,
            "off_class_share": 0.1}
    return {"format": study.FORMAT, "vae": vae, "ddpm": ddpm, "dataset": "mnist", "budget": {
                "pool": 6000, "train": 5000, "test": 2000, "pairs": 6, "frames": 10, "steps": 50},
            "probes": [{"model": "VAE", "representation": "mu", "t": None, "block": None, **probe_row},
                       {"model": "DDPM", "representation": "h-space", "t": 51, "block": "bottleneck", **probe_row}],
            "inversion": [{"steps": 10, "images": 16, "rmse": 0.04, "max_abs": 0.7, "x_T_std": 0.45,
                           "invert_ms_per_image": 11.3, "decode_ms_per_image": 4.0}],
            "interpolation": {"VAE lerp": path}, "threads": 2, "device": "cpu",
            "seconds": {"probes": 47.1, "inversion": 15.6, "interpolation": 1.2}}


def test_markdown_prints_paths_relative_to_its_folder_and_timings_as_a_table(tmp_path, monkeypatch):
    result = fake_representations(str(tmp_path / "runs" / "vae"), str(tmp_path / "runs" / "ddpm"))
    text = study.markdown(result, tmp_path / "out")  # a page in tmp/out: the runs lie beside it
    assert "VAE ../runs/vae against DDPM ../runs/ddpm (MNIST)" in text and str(tmp_path) not in text
    assert "{'" not in text and "seconds:" not in text  # no Python dict repr
    assert "Time per phase, measured on cpu with 2 thread(s):\n\n| phase | seconds |\n|---|---|\n" in text
    assert "| probes | 47.1 |\n| inversion | 15.6 |\n| interpolation | 1.2 |\n| total | 63.9 |" in text
    assert "| VAE | mu | - | - | 16 | 0.900 ± 0.010 | 0.800 ± 0.020 | 0.050 |" in text  # the tables as before
    monkeypatch.chdir(tmp_path)
    assert "VAE runs/vae against DDPM runs/ddpm" in study.markdown(result)  # default: from the current folder
    study.write({**result, "frames": {"VAE lerp": torch.rand(1, 3, 1, 28, 28)}}, tmp_path / "runs" / "rep")
    saved = (tmp_path / "runs" / "rep" / "representations.md").read_text()
    assert "VAE ../vae against DDPM ../ddpm" in saved and str(tmp_path) not in saved  # from its own folder
    assert study.read(tmp_path / "runs" / "rep")["vae"] == result["vae"] and study.read(tmp_path) is None
