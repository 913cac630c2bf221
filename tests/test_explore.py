"""The latent explorer: its page, in headless Chromium, decodes as PyTorch does and reacts to its controls."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import write_mnist
from test_report import make_reproduction
from vaelab.cli.main import main
from vaelab.data.registry import MNIST
from vaelab.data.images import Images, load
from vaelab.errors import VaelabError
from vaelab.studies import report
from vaelab.vae import explore
from vaelab.vae.config import VAEModelConfig, VAEConfig
from vaelab.vae.archs import CONV_ARCHS, DENSE_ARCHS, PARSERS
from vaelab.vae.networks import build_vae
from vaelab.nn import count_parameters
from vaelab.vae.run import VAERun

# (family, arch, latent, map, weight scale): both decoders, both conv geometries (7x7 start; 5x5 start with the
# 3x3 layer), widths that are and are not multiples of 4 (the page unrolls its loops by 4) and every kind of
# map. The scale widens the logits (std 1-2.5) so that a wrong weight shows.
MODELS = {"dense": ("dense", "15-32", 3, "tsne", 2.5), "conv": ("conv", "32-64", 4, "pca", 2.0),
          "conv3": ("conv", "16-32-64", 2, "auto", 2.0)}
# Injected at the top of <head>: every error, rejected promise or console.error of the page is recorded on
# <html data-errors>, also those that come after the harness has run (the test images are inflated async).
TRAP = """<script>window.__errors=[];function __rec(m){__errors.push(m);
document.documentElement.setAttribute('data-errors',JSON.stringify(__errors))}
addEventListener('error',function(e){__rec(String(e.message))});
addEventListener('unhandledrejection',function(e){__rec('in a promise: '+String(e.reason))});
var __ce=console.error;console.error=function(){__rec([].join.call(arguments,' '));__ce.apply(console,arguments)};
</script>"""
# Injected before </body>, after the page's script: decodes fixed z, moves a slider, hovers the map.
HARNESS = """<script>(function(){var r={errors:window.__errors};try{var E=window.vaelabExplorer;
r.ready=document.body.dataset.ready;r.decoded=__Z.map(function(z){return E.decode(z)});
var out=document.getElementById('out'),hc=document.createElement('canvas');hc.width=out.width;hc.height=out.height;
var hx=hc.getContext('2d',{willReadFrequently:true});  // its own canvas: no readback warning on the page's
function pixels(){hx.drawImage(out,0,0);return hx.getImageData(0,0,hc.width,hc.height).data.slice()}
function changed(a,b){var n=0;for(var i=0;i<a.length;i++)if(a[i]!==b[i])n++;return n}
var before=pixels(),s=document.querySelector('#sliders input');
s.value=3;s.dispatchEvent(new Event('input'));var after=pixels();
r.slider_changed=changed(before,after);r.z_slider=Array.from(E.z);
var m=document.getElementById('map'),b=m.getBoundingClientRect();
m.dispatchEvent(new PointerEvent('pointermove',{clientX:b.left+b.width*0.3,clientY:b.top+b.height*0.6}));
r.hover_changed=changed(after,pixels());r.z_hover=Array.from(E.z);
r.ms=E.bench(20)}catch(e){r.exception=String(e)}
var pre=document.createElement('pre');pre.id='result';pre.textContent=JSON.stringify(r);
document.body.appendChild(pre)})();</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here: the explorer's browser tests need chromium (make test installs Debian's)")


def fixed_z(d: int) -> torch.Tensor:
    """Three fixed latents: zero, a ramp, a seeded normal draw."""
    g = torch.Generator().manual_seed(1)
    return torch.stack([torch.zeros(d), torch.linspace(-2, 2, d), 1.5 * torch.randn(d, generator=g)])


def tiny_images(n: int = 120) -> Images:
    """Random test images with labels (the explorer encodes only the test set)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Images(x, y, x, y, Path("."), MNIST)


def tiny_run(folder: Path, family: str, arch: str, latent: int, scale: float) -> VAERun:
    """An untrained model of the given architecture, decoder weights scaled, as an opened run."""
    torch.manual_seed(0)
    model = build_vae(family, arch, latent).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(scale)
    cfg = VAEConfig(model=VAEModelConfig(family, arch, latent)).validate()
    return VAERun(folder, cfg, model, [], torch.device("cpu"))


def open_in_chromium(page: Path, z: torch.Tensor, tmp: Path) -> tuple[dict, str, str]:
    """Load the page with the harness in headless Chromium: (harness results, the page's DOM, stderr)."""
    text = page.read_text().replace("<head>", "<head>" + TRAP, 1)
    text = text.replace("</body>", f"<script>var __Z={json.dumps(z.tolist())};</script>{HARNESS}</body>", 1)
    tested = tmp / "tested.html"
    tested.write_text(text)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]
    done = subprocess.run([chromium(), *flags, "--dump-dom", tested.as_uri()], capture_output=True, text=True,
                          timeout=120)
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1))), done.stdout, done.stderr


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Each model's page opened once in Chromium: name -> (run, fixed z, harness results, DOM, stderr)."""
    chromium()
    pages = {}
    for name, (family, arch, latent, how, scale) in MODELS.items():
        tmp = tmp_path_factory.mktemp(name)
        run = tiny_run(tmp / name, family, arch, latent, scale)
        page = explore.write_explorer(run, tiny_images(), tmp / "explorer.html", points=100, how=how)
        z = fixed_z(latent)
        pages[name] = (run, z, *open_in_chromium(page, z, tmp))
    return pages


@pytest.mark.parametrize("name", MODELS)
def test_page_loads_without_a_console_error(loaded, name):
    _, _, result, dom, stderr = loaded[name]
    assert "exception" not in result, result["exception"]
    assert result["errors"] == [] and result["ready"] == "yes"
    assert not re.search(r"<html[^>]* data-errors=", dom), dom[:300]  # none later either
    assert not [line for line in stderr.splitlines() if "CONSOLE" in line], stderr[-2000:]
    assert 'data-images="shown"' in dom  # the test images, inflated in the page, are drawn


@pytest.mark.parametrize("name", MODELS)
def test_decoded_pixels_equal_pytorch(loaded, name):
    run, z, result, _, _ = loaded[name]
    with torch.no_grad():
        expected = run.model.decode(z)[:, 0].reshape(3, -1)
    got = torch.tensor(result["decoded"])
    assert expected.std() > 0.15  # pixels spread over [0, 1]: a wrong weight cannot hide in a flat image
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_a_slider_and_the_map_change_the_image(loaded, name):
    _, _, result, _, _ = loaded[name]
    assert result["slider_changed"] > 1000  # bytes of the 224 x 224 RGBA canvas
    assert result["z_slider"][0] == 3  # the first slider is z1 (every dimension has one up to 16)
    assert result["hover_changed"] > 1000 and result["z_hover"] != result["z_slider"]
    assert 0 <= result["ms"] < 100  # ms per decoded frame (0: below the clock's resolution), a generous bound


def test_every_architecture_exports_or_is_refused():
    for family in PARSERS:
        for arch in {"dense": DENSE_ARCHS, "conv": CONV_ARCHS}[family]:
            model = build_vae(family, arch, 3)
            spec = explore.decoder_spec(model.decoder)
            assert spec["parameters"] == count_parameters(model.decoder)
    with pytest.raises(VaelabError, match="dense and conv decoders"):
        explore.decoder_spec(torch.nn.Sequential(torch.nn.Linear(3, 784)))


def test_slider_dims_keep_the_most_varied_when_there_are_many():
    mu = torch.tensor([[-1.0], [1.0]]) * torch.arange(40.0).roll(7)  # variance grows with the index, rolled by 7
    assert explore.slider_dims(mu.numpy()) == [*range(7), *range(31, 40)]  # the 16 largest, in order
    assert explore.slider_dims(mu[:, :12].numpy()) == list(range(12))


def test_cli_writes_the_page_and_refuses_what_is_no_vae_run(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist", n_train=128, n_test=40)
    run = tmp_path / "study" / "dense" / "run"
    assert main(["train", "--model", "dense", "--arch", "16-32", "--latent-dim", "3", "--epochs", "1",
                 "--device", "cpu", "--out", str(run), "--data-dir", str(data)]) == 0
    assert main(["explore", str(run), "--data-dir", str(data)]) == 0
    page = (run / "explorer.html").read_text()
    assert '"how":"t-SNE"' in page and '"n":40' in page and "<script src" not in page  # self-contained
    other = tmp_path / "x" / "e.html"
    assert main(["explore", str(run), "--map", "pca", "--out", str(other), "--data-dir", str(data)]) == 0
    assert '"how":"PCA"' in other.read_text()
    ddpm = tmp_path / "ddpm"
    ddpm.mkdir()
    (ddpm / "config.json").write_text(json.dumps({"kind": "ddpm"}))
    capsys.readouterr()
    assert main(["explore", str(ddpm)]) == 4 and "not a VAE" in capsys.readouterr().err
    assert main(["explore", str(tmp_path / "missing")]) == 4 and "not a folder" in capsys.readouterr().err
    # the report writes the explorer of each run it draws, and links every explorer of its studies
    (run / "explorer.html").unlink()
    report.model_figures(run, load("mnist", data), with_latent=False)
    assert (run / "explorer.html").is_file()
    make_reproduction(tmp_path / "study")
    md, html_page = report.build(tmp_path / "study", data=None)
    assert "<a href='dense/run/explorer.html'>run</a>" in html_page.read_text()
    assert "[run](dense/run/explorer.html)" in md.read_text()


def test_the_page_names_its_run_relative_to_the_page(tmp_path):
    run = tiny_run(tmp_path / "study" / "dense" / "run", "dense", "15-32", 3, 1.0)
    for folder in (run.path, tmp_path / "pages"):
        folder.mkdir(parents=True)
    inside = explore.write_explorer(run, tiny_images(), points=40, how="pca")  # RUN/explorer.html: the run's name
    assert '"run":"run"' in inside.read_text()
    other = explore.write_explorer(run, tiny_images(), tmp_path / "pages" / "e.html", points=40, how="pca")
    text = other.read_text()
    assert '"run":"../study/dense/run"' in text and str(tmp_path) not in text
    assert explore.run_label(tmp_path / "r", tmp_path) == "r" and explore.run_label(tmp_path / "r", None) == "r"
