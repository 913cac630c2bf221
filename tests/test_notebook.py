"""The example notebook runs top to bottom (one epoch, real MNIST), so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, real_mnist_dir

nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed: pip install 'vaelab[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed: pip install 'vaelab[notebook]'")
pytest.importorskip("ipykernel", reason="the notebook extra is not installed: pip install 'vaelab[notebook]'")


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    folder = real_mnist_dir()
    if folder is None:
        pytest.skip("real MNIST not available (set VAELAB_DATA)")
    monkeypatch.setenv("VAELAB_DATA", str(folder))
    monkeypatch.setenv("VAELAB_EXAMPLE_EPOCHS", "1")
    monkeypatch.setenv("VAELAB_EXAMPLE_OUT", str(tmp_path / "run"))
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "run" / "metrics.json").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum(o.get("output_type") == "display_data" for o in outputs) >= 4  # the four figures
    text = "".join(o.get("text", "") for o in outputs)
    assert "FD-LeNet" in text and "N=1000" in text
    assert Path(tmp_path / "run" / "config.json").is_file()
