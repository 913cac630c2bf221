"""The pinned reference classifiers and `vaelab score`: same bytes, same numbers, bad input refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, real_mnist_dir
from test_evaluate import make_run, synthetic_mnist

from vaelab.cli.main import main
from vaelab.data.registry import DATASETS, FASHION_MNIST, MNIST
from vaelab.data.images import load, to_unit
from vaelab.errors import VaelabError
from vaelab.metrics import classifier, evaluate, quality, reference
from vaelab.metrics.likelihood import fast_copy
from vaelab.metrics.score import read_images, score_images

N = 1000  # a standard N whose anchors ship (1000 generated x 10000 reference images)
KEYS = ("fd_lenet", "precision", "recall", "density", "coverage", "classifier_score")


@pytest.fixture(scope="module")
def mnist():
    """The real MNIST, or skip."""
    folder = real_mnist_dir()
    if folder is None:
        pytest.skip("real MNIST not available (set VAELAB_DATA)")
    return load("mnist", folder)


def anchor_images(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The floor's training images and the ceiling's noise, drawn exactly as quality.anchors draws them."""
    g = torch.Generator().manual_seed(quality.ANCHOR_SEED)
    idx = torch.randperm(len(data.train_x), generator=g)[:n]
    return data.train_x[idx], torch.rand(n, 1, 28, 28, generator=g)


def test_every_shipped_classifier_matches_its_pin_and_records_how_it_was_made():
    assert reference.check_pins() == {}
    for name, ds in DATASETS.items():
        info = json.loads((reference.shipped_folder(ds) / classifier.INFO).read_text())
        assert info["sha256"] == reference.PINNED[name]
        assert info["test_accuracy"] >= ds.classifier_bar
        assert info["command"] == f"vaelab classifier train --dataset {name} --out src/vaelab/metrics/reference/{name}"
        stats = reference.read_stats(reference.shipped_folder(ds))
        assert stats[0].shape == (128,) and stats[1].shape == (128, 128)


def test_shipped_mnist_classifier_reaches_its_recorded_accuracy_and_statistics(mnist):
    clf = reference.pinned(MNIST)
    assert clf.pinned and clf.describe()["pinned"] and clf.sha256 == reference.PINNED["mnist"]
    assert classifier.accuracy(clf.net, mnist.test_x, mnist.test_y) == pytest.approx(clf.info["test_accuracy"], abs=1e-4)
    mu, sigma = quality.gaussian_stats(quality.features(to_unit(mnist.test_x), clf)[0])
    # float32 features differ in their last bits between CPUs (seen: 7e-7 on covariances up to 10): the
    # shipped statistics must hold to well inside the 1e-3 that FD-LeNet promises across machines
    assert torch.allclose(mu, clf.test_stats[0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(sigma, clf.test_stats[1], rtol=1e-4, atol=1e-5)
    assert clf.test_stats[2] == reference.images_digest(mnist.test_x)


def test_shipped_fashion_classifier_reaches_its_recorded_accuracy():
    folder = os.environ.get("VAELAB_DATA_FASHION_MNIST") or str(REPO.parent / "shared" / "data" / "fashion-mnist")
    if not Path(folder, "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real Fashion-MNIST not available (set VAELAB_DATA_FASHION_MNIST)")
    data = load("fashion-mnist", folder)
    clf = reference.pinned(FASHION_MNIST)
    assert classifier.accuracy(clf.net, data.test_x, data.test_y) == pytest.approx(clf.info["test_accuracy"], abs=1e-4)


def copy_shipped(tmp_path, monkeypatch) -> Path:
    """The shipped folders copied into tmp_path, which becomes the package's reference folder."""
    shutil.copytree(reference.SHIPPED, tmp_path / "reference")
    monkeypatch.setattr(reference, "SHIPPED", tmp_path / "reference")
    return tmp_path / "reference" / "mnist"


def test_a_tampered_weights_file_is_refused_even_with_a_matching_sidecar(tmp_path, monkeypatch):
    folder = copy_shipped(tmp_path, monkeypatch)
    assert reference.pinned(MNIST).sha256 == reference.PINNED["mnist"]  # the copy itself loads
    w = folder / classifier.WEIGHTS
    raw = bytearray(w.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(raw))
    with pytest.raises(VaelabError, match="corrupt.*reinstall vaelab"):  # the sidecar's checksum catches it
        reference.pinned(MNIST)
    info = json.loads((folder / classifier.INFO).read_text())
    info["sha256"] = classifier.sha256_file(w)  # a consistent forgery: only the pin in the code catches it
    (folder / classifier.INFO).write_text(json.dumps(info))
    with pytest.raises(VaelabError, match="not the pinned"):
        reference.pinned(MNIST)
    assert reference.check_pins()["mnist"] == "sha256 differs from the pin"


@pytest.mark.parametrize("name", [reference.STATS, reference.ANCHORS])
def test_tampered_statistics_or_anchors_are_refused(tmp_path, monkeypatch, name):
    folder = copy_shipped(tmp_path, monkeypatch)
    assert reference.check_pins() == {}
    raw = bytearray((folder / name).read_bytes())
    raw[-3] ^= 0x01  # one bit: a covariance entry, or a digit of an anchor
    (folder / name).write_bytes(bytes(raw))
    with pytest.raises(VaelabError, match=f"{name}.*not the pinned file.*reinstall"):
        reference.pinned(MNIST)
    assert reference.check_pins()["mnist"] == f"{name} differs from its pin"
    (folder / name).unlink()
    with pytest.raises(VaelabError, match="missing"):
        reference.pinned(MNIST)


def save_npy(path: Path, a) -> Path:
    """Write an array to path (.npy) and return the path."""
    np.save(path, np.asarray(a))
    return path


@pytest.mark.parametrize("which", ["floor", "ceiling"])
def test_score_of_the_anchor_images_is_the_shipped_anchor(mnist, tmp_path, which, capsys):
    train_u8, noise = anchor_images(mnist, N)
    images = train_u8.numpy() if which == "floor" else noise.numpy()  # uint8 and float32 inputs both
    out = tmp_path / "s.json"
    assert main(["score", str(save_npy(tmp_path / "x.npy", images)), "--resamples", "0", "--out", str(out)]) == 0
    got = json.loads(out.read_text())["sample_quality"]
    shipped = reference.read_anchor_cache(reference.SHIPPED / "mnist" / reference.ANCHORS)
    want = shipped[f"{reference.PINNED['mnist']}:{N}x10000:pr{quality.PR_K}:dc{quality.DC_K}"][which]
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k  # seen: 2e-7 relative on another CPU
    assert got["classifier"]["pinned"] and "FD-LeNet" in capsys.readouterr().out


def test_fd_is_the_same_with_one_and_two_threads(mnist):
    images = to_unit(mnist.train_x[-N:])
    clf = reference.pinned(MNIST)
    before = torch.get_num_threads()
    try:
        fds = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fds.append(score_images(images, mnist, "cpu", clf=clf, resamples=0)["fd_lenet"])
    finally:
        torch.set_num_threads(before)
    assert abs(fds[0] - fds[1]) < 1e-3, fds


def test_fd_from_the_shipped_statistics_equals_fd_from_the_test_features(mnist):
    clf = reference.pinned(MNIST)
    images = to_unit(mnist.train_x[:N])
    real_f, stats = quality.real_side(mnist, clf, 10000)
    assert stats is not None and stats[0] is clf.test_stats[0]  # the full real test set: the shipped statistics
    fake_f, _ = quality.features(images, clf)
    assert quality.fd_features(real_f, fake_f) == pytest.approx(quality.frechet_distance(*stats, *quality.gaussian_stats(fake_f)), rel=1e-6)
    # another test set (here: its first half) never uses the shipped statistics
    half = type(mnist)(mnist.train_x, mnist.train_y, mnist.test_x[:5000], mnist.test_y[:5000], mnist.source, mnist.dataset)
    _, stats_half = quality.real_side(half, clf, 5000)
    assert not torch.equal(stats_half[0], clf.test_stats[0])


@pytest.mark.parametrize("array, message", [
    (np.zeros((600, 32, 32), np.uint8), "expected \\(N, 28, 28\\)"),
    (np.zeros((600, 784), np.float32), "expected \\(N, 28, 28\\)"),
    (np.full((600, 28, 28), 2.0, np.float32), "expected intensities in \\[0, 1\\]"),
    (np.full((600, 28, 28), -0.5, np.float32), "\\(x \\+ 1\\) / 2"),
    (np.full((600, 28, 28), np.nan, np.float32), "NaN"),
    (np.zeros((600, 28, 28), np.complex64), "complex64"),
])
def test_score_refuses_wrong_shapes_and_ranges(tmp_path, capsys, array, message):
    assert main(["score", str(save_npy(tmp_path / "bad.npy", array))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(VaelabError, match=message):
        read_images(tmp_path / "bad.npy")


def test_score_refuses_too_few_images_pickles_and_ambiguous_npz(tmp_path, mnist):
    with pytest.raises(VaelabError, match="too few"):
        score_images(torch.rand(100, 1, 28, 28), mnist)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VaelabError, match="holds Python objects"):  # never unpickled
        read_images(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 28, 28), np.uint8), b=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(VaelabError, match="--key"):
        read_images(tmp_path / "two.npz")
    assert read_images(tmp_path / "two.npz", key="b").shape == (2, 1, 28, 28)
    (tmp_path / "trunc.npy").write_bytes(save_npy(tmp_path / "ok.npy", np.zeros((9, 28, 28))).read_bytes()[:200])
    with pytest.raises(VaelabError, match="not a readable"):
        read_images(tmp_path / "trunc.npy")


def test_a_folder_of_pngs_reads_as_the_same_images_as_the_array(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(a):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    assert torch.equal(read_images(folder), torch.from_numpy(a[:, None].astype(np.float32) / 255))
    Image.fromarray(np.stack([a[0], a[1], a[0]], -1)).save(folder / "999.png")  # a colour image among them
    with pytest.raises(VaelabError, match="colour"):
        read_images(folder)
    (folder / "999.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "998.png")
    with pytest.raises(VaelabError, match="32x32"):
        read_images(folder)


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    from PIL import Image
    a = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    folder = tmp_path / "pngs16"
    folder.mkdir()
    for i, img in enumerate(a):
        Image.fromarray(img.astype(np.uint16) * 257).save(folder / f"{i}.png")  # the same pixels on 16 bits
    assert Image.open(folder / "0.png").mode.startswith("I")
    assert torch.equal(read_images(folder), torch.from_numpy(a[:, None].astype(np.float32) / 255))


def test_score_of_a_runs_samples_equals_its_evaluation(mnist, tmp_path):
    run = make_run(tmp_path / "run", synthetic_mnist())  # a tiny dense VAE: the numbers, not the model, matter
    s = evaluate.Settings(test_images=200, iwae_k=2, iwae_images=20, n_samples=N, n_ref=10000, probe_train=500, seed=3)
    sq = evaluate.evaluate_path(run, s, "cpu", data=mnist, log=lambda m: None)["sample_quality"]
    images = evaluate.vae_samples(fast_copy(evaluate.open_vae(run, "cpu").model), N, s.seed + 2)  # evaluate's draw
    out = tmp_path / "score.json"
    assert main(["score", str(save_npy(tmp_path / "samples.npy", images.numpy())), "--seed", "3", "--out", str(out)]) == 0
    got = json.loads(out.read_text())["sample_quality"]
    for k in KEYS:
        assert got[k] == sq[k] and got[f"{k}_ci"] == sq[f"{k}_ci"], k
    assert got["classifier"] == sq["classifier"] and sq["classifier"]["pinned"]


def test_compare_and_study_tables_warn_about_different_classifiers(tmp_path):
    from vaelab.cli.evaluate import mismatches
    from vaelab.studies.tables import Row, classifier_note
    metrics = [{"sample_quality": {"classifier": {"sha256": s}}} for s in ("a" * 64, "b" * 64)]
    assert any("different reference classifiers" in n for n in mismatches(metrics))
    assert not mismatches(metrics[:1])
    rows = [Row("conv", "32-64-128", 10, 1.0, classifiers={"a" * 64}), Row("conv", "32", 10, 1.0, classifiers={"b" * 64})]
    assert classifier_note(rows).startswith("Warning: these runs were scored with 2 different")
    assert classifier_note(rows[:1]) == ""
