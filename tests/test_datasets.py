"""The dataset registry: MNIST and Fashion-MNIST as two entries, each with its own files, sources and checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, write_mnist
from vaelab.cli.main import build_parser, main
from vaelab.data import sources
from vaelab.data.registry import DATASETS, FASHION_MNIST, MNIST, get
from vaelab.data.images import info, load
from vaelab.errors import DataError, VaelabError
from vaelab.vae.run import open_vae

SHARED = REPO.parent / "shared" / "data"


def shared(name: str) -> Path:
    """The read-only copy of a dataset beside the repository, or skip."""
    folder = SHARED / name
    if not (folder / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"{folder} not available")
    return folder


def test_entries_are_complete_and_distinct():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for d in DATASETS.values():
        assert len(d.files) == 4 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in d.files.values())
        assert d.num_classes == 10 and len(set(d.classes)) == 10
        assert d.sources and set(d.sources) <= set(sources.FETCHERS)
        assert 0 < d.classifier_bar < 1 and 0 < d.pixel_mean < 1 and 0 < d.pixel_std < 1
    assert len({d.env_var for d in DATASETS.values()}) == len(DATASETS)
    assert set(MNIST.files.values()).isdisjoint(FASHION_MNIST.files.values())
    with pytest.raises(VaelabError, match="unknown dataset 'cifar'"):
        get("cifar")


def test_cli_dataset_choices_come_from_the_registry():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("train", "demo", "figures"):
        action = next(a for a in sub[command]._actions if a.dest == "dataset")
        assert list(action.choices) == list(DATASETS)


def test_real_fashion_mnist_loads_and_verifies():
    folder = shared("fashion-mnist")
    assert all(r["verified"] for r in info("fashion-mnist", folder))
    data = load("fashion-mnist", folder)
    assert data.dataset is FASHION_MNIST and data.train_x.shape == (60000, 1, 28, 28)
    assert np.bincount(data.test_y.numpy()).tolist() == [1000] * 10  # balanced classes, unlike MNIST
    assert abs(data.train_x.float().div(255).mean().item() - FASHION_MNIST.pixel_mean) < 1e-3


def test_a_folder_of_another_dataset_is_refused():
    with pytest.raises(DataError, match="holds MNIST, not Fashion-MNIST"):
        load("fashion-mnist", shared("mnist"))
    with pytest.raises(DataError, match="holds Fashion-MNIST, not MNIST"):
        load("mnist", shared("fashion-mnist"))


def test_each_dataset_has_its_own_variable_and_cache(tmp_path, monkeypatch):
    tiny = write_mnist(tmp_path / "tiny")
    monkeypatch.setenv("VAELAB_DATA", str(tiny))  # MNIST's variable: Fashion-MNIST must not read it
    monkeypatch.delenv("VAELAB_DATA_FASHION_MNIST", raising=False)
    monkeypatch.setitem(sources.FETCHERS, "debian", lambda dataset, log: None)
    with pytest.raises(DataError, match="could not fetch Fashion-MNIST.*VAELAB_DATA_FASHION_MNIST"):
        load("fashion-mnist")
    assert load("mnist").source == tiny
    assert sources.cache_dir(FASHION_MNIST) != sources.cache_dir(MNIST)
    assert sources.cache_dir(FASHION_MNIST).parent == sources.cache_root()


def test_failed_fetch_is_one_clear_line(tmp_path, monkeypatch, capsys):
    def fail(dataset, log):
        raise DataError("apt-get is not available here")

    monkeypatch.setitem(sources.FETCHERS, "debian", fail)
    monkeypatch.delenv("VAELAB_DATA_FASHION_MNIST", raising=False)
    code = main(["data", "fetch", "--dataset", "fashion-mnist"])
    err = capsys.readouterr().err
    assert code == 3 and "debian: apt-get is not available" in err and "Traceback" not in err


def test_labels_outside_the_classes_are_refused(tmp_path):
    folder = write_mnist(tmp_path / "d")
    raw = bytearray((folder / "t10k-labels-idx1-ubyte").read_bytes())
    raw[-1] = 10
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="outside 0..9"):
        load("mnist", folder)


def test_training_on_another_dataset_records_it(tmp_path, capsys):
    tiny = write_mnist(tmp_path / "tiny")  # synthetic images stand in for Fashion-MNIST (not md5-checked)
    out = tmp_path / "run"
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", tiny, "--epochs", "1", "--model", "dense",
            "--arch", "8-16", "--latent-dim", "2", "--device", "cpu", "--out", out]
    assert main([str(a) for a in args]) == 0
    assert json.loads((out / "config.json").read_text())["dataset"] == "fashion-mnist"
    code = main(["interpolate", str(out), "--dataset", "mnist", "--data-dir", str(tiny)])
    assert code == 2 and "trained on fashion-mnist, not mnist" in capsys.readouterr().err
    assert main(["interpolate", str(out), "--data-dir", str(tiny)]) == 0
    assert (out / "interpolation.png").is_file()


def test_a_run_written_before_datasets_existed_is_mnist(tmp_path, capsys):
    tiny = write_mnist(tmp_path / "tiny")
    out = tmp_path / "old"
    args = ["train", "--data-dir", tiny, "--epochs", "1", "--model", "dense", "--arch", "8-16", "--latent-dim", "2",
            "--device", "cpu", "--out", out]
    assert main([str(a) for a in args]) == 0
    cfg = json.loads((out / "config.json").read_text())
    del cfg["dataset"]  # as every config.json written before the registry
    (out / "config.json").write_text(json.dumps(cfg))
    run = open_vae(out, "cpu")
    assert run.cfg.dataset == "mnist"
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--data-dir", str(tiny)]) == 0
