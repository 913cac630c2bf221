"""Sweeps: spec checking, safe names, resumable runs, failures isolated, one sweep per folder."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.studies.executors import LocalExecutor
from vaelab.studies.sweep import (SweepLock, builtin_specs, configs, load_spec, parse_spec, prepare, run_name,
                                  run_sweep, stack_by_default)
from vaelab.vae.config import VAEConfig, VAETrainConfig

TINY = """
name = "tiny"
[base]
model.family = "dense"
model.arch = "16-32"
train.epochs = 1
train.batch_size = 64
train.device = "cpu"
[grid]
"model.latent_dim" = [2, 3]
"""


def test_builtin_specs_match_the_report():
    assert set(builtin_specs()) >= {"dense", "conv", "beta"}
    dense = configs(load_spec("dense"))
    assert len(dense) == 18 and {c.model.latent_dim for _, c in dense} == {2, 5, 10, 20, 50, 100}
    assert {c.model.arch for _, c in configs(load_spec("conv"))} == {"32-64", "16-32-64", "32-64-128"}
    assert [c.train.beta for _, c in configs(load_spec("beta"))] == [0.2, 0.5, 1.0, 2.0, 5.0]


@pytest.mark.parametrize("text, msg", [
    ("name = [", "not valid TOML"),
    ("[grid]\n'model.latent_dim' = 3", "non-empty list"),
    ("[grid]\n'model.latent_dim' = [0]", "latent_dim must be >= 1"),
    ("[grid]\n'model.colour' = ['red']", "unknown config key"),
    ("[base]\ntrain.beta = 'high'", "must be a number"),
    ("[extra]\nx = 1", "unknown section"),
    ("[evaluate]\nfast = true", "unknown \\[evaluate\\] option"),
])
def test_bad_specs(text, msg):
    with pytest.raises(VaelabError, match=msg):
        parse_spec(text)


def test_names_stay_inside_the_output_folder():
    for hostile in ("../../etc", "/abs/path", "..", "a/b"):
        name = run_name(VAEConfig(), {"train.device": hostile})
        assert "/" not in name and not name.startswith(".") and ".." not in name.split("_")


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_sweep_runs_resumes_and_isolates_failures(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("VAELAB_THREADS", "1")
    spec = parse_spec(TINY + '"train.device" = ["cpu", "cuda:7"]\n')  # the cuda runs fail on this machine
    out = tmp_path / "sweep"
    summary = run_sweep(spec, out, jobs=2, data_dir=str(tiny_mnist), evaluate=None, log=lambda m: None)
    ok = [s["run"] for s in summary if s["status"] == "ok"]
    failed = [s["run"] for s in summary if s["status"].startswith("failed")]
    assert len(ok) == 2 and len(failed) == 2
    assert json.loads((out / "sweep.json").read_text())["runs"] == summary
    before = {r: file_hashes(out / r) for r in ok}
    again = run_sweep(spec, out, jobs=1, data_dir=str(tiny_mnist), evaluate=None, log=lambda m: None)
    assert [s["status"] for s in again if s["run"] in ok] == ["done (earlier)"] * 2
    assert {r: {k: v for k, v in file_hashes(out / r).items() if k != "log.txt"} for r in ok} == \
           {r: {k: v for k, v in h.items() if k != "log.txt"} for r, h in before.items()}


def test_second_sweep_on_same_folder_is_refused(tmp_path):
    with SweepLock(tmp_path):
        with pytest.raises(VaelabError, match="another sweep is running"):
            with SweepLock(tmp_path):
                pass


def test_cli_list_and_exit_code(tmp_path, tiny_mnist):
    spec = tmp_path / "s.toml"
    spec.write_text(TINY)
    env = {**os.environ, "VAELAB_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "vaelab.cli", "sweep", str(spec), "--list"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and "dense-16-32_z2_beta1_seed0" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vaelab.cli", "sweep", str(spec), "--out", str(tmp_path / "o"),
                        "--no-evaluate", "--set", "train.device=cuda:3", "--data-dir", str(tiny_mnist)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "2 run(s) failed" in r.stderr and "Traceback" not in r.stderr


def test_together_trains_a_beta_group_and_falls_back_run_by_run(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("VAELAB_THREADS", "1")
    # beta 1e39 overflows float32 (inf loss): the stacked process stops, then each run is retried alone
    spec = parse_spec(TINY.replace("[2, 3]", "[2]") + '"train.beta" = [0.5, 2.0, 1e39]\n')
    out = tmp_path / "sweep"
    logs = []
    summary = run_sweep(spec, out, jobs=1, data_dir=str(tiny_mnist), evaluate=None, log=logs.append,
                        together="always")
    assert [s["status"] for s in summary] == ["ok", "ok", "failed (exit 5)"]
    assert any("together failed" in m for m in logs)
    ok = parse_spec(TINY.replace("[2, 3]", "[2]") + '"train.beta" = [0.5, 2.0]\n')
    summary = run_sweep(ok, tmp_path / "ok", jobs=1, data_dir=str(tiny_mnist), evaluate=None, together="always",
                        log=lambda m: None)
    assert [s["status"] for s in summary] == ["ok", "ok"]
    for s in summary:
        history = [json.loads(line) for line in (tmp_path / "ok" / s["run"] / "metrics.jsonl").read_text().splitlines()]
        assert history[-1]["trained_with"] == 2


def test_a_family_alone_means_the_reports_model_of_that_family():
    spec = parse_spec('[base]\nmodel.family = "dense"\n[grid]\n"train.beta" = [1.0]\n')
    (_, cfg), = configs(spec)
    assert (cfg.model.arch, cfg.model.latent_dim) == ("256-512", 5)
    spec = parse_spec('[base]\nmodel.family = "dense"\n[grid]\n"model.latent_dim" = [2]\n')
    assert [(c.model.arch, c.model.latent_dim) for _, c in configs(spec)] == [("256-512", 2)]
    assert configs(load_spec("beta"))[0][1].model.arch == "32-64-128"


@pytest.mark.parametrize("together", ["always", "never"])
def test_each_run_is_evaluated_after_training_and_a_failed_evaluation_fails_only_its_run(
        tmp_path, tiny_mnist, monkeypatch, together):
    class FakeEvaluate(LocalExecutor):
        """Real training processes; a fake evaluation: metrics.json for every run but beta 2, which fails."""

        def argv(self, job):
            if job.kind != "evaluate":
                return super().argv(job)
            code = "import sys, pathlib; r = pathlib.Path(sys.argv[1]); " \
                   "sys.exit(3) if 'beta2' in r.name else (r / 'metrics.json').write_text('{}')"
            return [sys.executable, "-c", code, str(job.runs[0])]

    monkeypatch.setenv("VAELAB_THREADS", "1")
    spec = parse_spec(TINY.replace("[2, 3]", "[2]") + '"train.beta" = [0.5, 1.0, 2.0]\n')
    summary = run_sweep(spec, tmp_path / "s", data_dir=str(tiny_mnist), evaluate={}, together=together,
                        log=lambda m: None, executor=FakeEvaluate(jobs=2))
    assert [s["status"] for s in summary] == ["ok", "ok", "failed (exit 3)"]
    assert [(tmp_path / "s" / s["run"] / "metrics.json").exists() for s in summary] == [True, True, False]


def test_a_dataset_in_the_spec_names_its_runs_and_old_folders_still_match(tmp_path):
    spec = parse_spec('name = "f"\n[base]\ndataset = "fashion-mnist"\n[grid]\n"model.latent_dim" = [2]\n')
    (name, cfg), = configs(spec)
    assert cfg.dataset == "fashion-mnist" and name.startswith("fashion-mnist_conv-32-64-128_z2")
    (mnist_name, mnist_cfg), = configs(spec, {"dataset": "mnist"})
    assert mnist_name == "conv-32-64-128_z2_beta1_seed0"  # MNIST runs keep the names they always had
    prepare(tmp_path, [(mnist_name, mnist_cfg)])
    path = tmp_path / mnist_name / "config.json"
    saved = json.loads(path.read_text())
    del saved["dataset"]  # a sweep folder written before the dataset registry
    path.write_text(json.dumps(saved))
    prepare(tmp_path, [(mnist_name, mnist_cfg)])  # the same run: continued, not refused
    with pytest.raises(VaelabError, match="another config"):
        prepare(tmp_path, [(mnist_name, cfg)])


@pytest.mark.parametrize("cuda, devices, stacked", [
    (False, ["auto", "auto"], False),  # CPU only: separate processes are as fast
    (False, ["cpu"], False),
    (True, ["auto", "auto"], True),  # a GPU and every run may use it
    (True, ["auto", "cuda", "cuda:1"], True),
    (True, ["auto", "cpu"], False),  # one run asks for the CPU
    (True, ["cpu", "cpu"], False),
])
def test_together_auto_stacks_on_cuda_only_when_every_run_may_use_it(monkeypatch, cuda, devices, stacked):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    runs = [(f"r{i}", VAEConfig(train=VAETrainConfig(device=d, beta=0.5 * (i + 1)))) for i, d in enumerate(devices)]
    assert stack_by_default(runs) is stacked
