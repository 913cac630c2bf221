"""The command line answers at once: --help, --version and every COMMAND --help import no torch, matplotlib or
scikit-learn; `import vaelab` is light and leaves matplotlib's backend alone; help texts are short, point to
the docs and quote no measured number."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from vaelab.cli.main import build_parser

HEAVY = ("torch", "matplotlib", "sklearn")
CLI = Path(__file__).resolve().parents[1] / "src" / "vaelab" / "cli"

# in a fresh interpreter: run main(argv) for each argv given as JSON, then print the heavy modules imported
HELP_ALL = """
import contextlib, io, json, sys
from vaelab.cli.main import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    assert code in (0, None), (argv, code)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))
""" % (HEAVY,)

# in a fresh interpreter: the real entry point (`python -m vaelab.cli ARGS`), then the heavy modules imported
ENTRY = """
import json, runpy, sys
sys.argv = ["vaelab", *json.loads(sys.argv[1])]
try:
    runpy.run_module("vaelab.cli", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code in (0, None), e.code
print("\\nHEAVY " + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))
""" % (HEAVY,)


def python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -c code args` in a fresh interpreter; fail the test on a non-zero exit."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                       env=env or {**os.environ, "VAELAB_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return r


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-commands by name ({} if it has none)."""
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def command_paths(parser=None, prefix=()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-action, as (('ddpm', 'train'), its parser)."""
    out = []
    for name, p in subparsers(parser or build_parser()).items():
        out.append(((*prefix, name), p))
        out += command_paths(p, (*prefix, name))
    return out


def leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The commands that run something: those without sub-actions."""
    return [(path, p) for path, p in command_paths() if not subparsers(p)]


def test_every_help_imports_no_torch_matplotlib_or_sklearn():
    argvs = [["--help"], ["--version"], *([*path, "--help"] for path, _ in command_paths())]
    assert len(argvs) > 25  # every command and sub-action, not an empty walk
    r = python(HELP_ALL, json.dumps(argvs))
    assert json.loads(r.stdout.splitlines()[-1]) == []


def test_the_entry_point_answers_without_torch():
    for argv in (["--help"], ["--version"], ["train", "--help"], ["ddpm", "train", "--help"]):
        r = python(ENTRY, json.dumps(argv))
        heavy = json.loads(r.stdout.rsplit("HEAVY ", 1)[1])
        assert heavy == [], (argv, heavy)
        assert ("vaelab 0." in r.stdout) if argv == ["--version"] else ("usage: vaelab" in r.stdout)


def test_import_vaelab_is_light_and_the_api_still_there():
    r = python("import sys, json, vaelab\n"
               "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
               "print(json.dumps([heavy, dir(vaelab), vaelab.__version__]))" % (HEAVY,))
    heavy, names, version = json.loads(r.stdout)
    assert heavy == [] and version
    assert {"__version__", "datasets", "load", "train", "train_ddpm", "evaluate", "score", "VAEModel",
            "DDPMModel"} <= set(names)


def test_import_vaelab_and_plots_leave_the_matplotlib_backend_alone():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    r = python("import matplotlib\n"
               "default = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
               "import vaelab, vaelab.plots, vaelab.cli.main\n"
               "print(dict.__getitem__(matplotlib.rcParams, 'backend') is default)", env=env)
    assert r.stdout.strip() == "True"


def test_the_command_line_chooses_agg_for_its_own_process_only():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    r = python("import os, sys\nfrom vaelab.cli.main import main\n"
               "code = main(['evaluate', 'no-such-run'])\n"  # dispatched (the backend is set), then refused
               "import matplotlib\n"
               "print(code, matplotlib.get_backend().lower(), os.environ.get('MPLBACKEND'))", env=env)
    assert r.stdout.strip().splitlines()[-1] == "4 agg None"  # a notebook kernel started later keeps inline


def test_every_command_names_its_implementation():
    for path, p in leaves():
        impl = p.get_default("impl")
        assert isinstance(impl, str) and re.fullmatch(r"vaelab\.cli\.\w+:cmd_\w+", impl), (path, impl)


def test_help_texts_are_short_and_point_to_the_docs():
    for path, p in command_paths():
        text = p.format_help()
        assert f"docs/commands.md#{path[0]}" in text, path
        assert len(textwrap.wrap(p.description or "", 115)) <= 8, path  # a few lines, not an essay
    top = build_parser()
    assert len((top.epilog or "").splitlines()) <= 15


# measured results (timings, speed-ups, scores, machines) belong in the docs, not in the code's text
MEASURED = re.compile(r"\d[\d.,]*\s*(?:min\b|minutes?|hours?|seconds?|s\b(?! *=)|ms\b)|\d(?:\.\d+)?x faster|"
                      r"times faster|H200|H100|\d[ -](?:CPU )?cores?\b|images/s\b.*\d|FD-LeNet \d|about an hour",
                      re.IGNORECASE)


def test_no_measured_number_in_the_cli_sources():
    hits = []
    for path in sorted(CLI.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            text = re.sub(r"\{[^{}]*\}", "{}", line)  # format fields print results; they quote nothing measured
            if MEASURED.search(text):
                hits.append(f"{path.relative_to(CLI)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_parsers_choices_and_defaults_match_their_torch_importing_registries():
    """The parsers name these without importing the modules that define them; here they are compared."""
    from vaelab.cli import report
    from vaelab.cli.args import evaluate as evaluate_args, explore as explore_args, report as report_args
    from vaelab.cli.args import score as score_args, sweep as sweep_args, versus as versus_args
    from vaelab.metrics import evaluate, score
    from vaelab.studies import spec, versus
    from vaelab.vae import explore

    assert report_args.PROFILE_NAMES == tuple(report.PROFILES)
    assert (explore_args.PAGE, explore_args.DEFAULT_POINTS, explore_args.MAPS) == (
        explore.PAGE, explore.DEFAULT_POINTS, explore.MAPS)
    assert (score_args.MIN_IMAGES, score_args.PROTOCOL_N) == (score.MIN_IMAGES, score.PROTOCOL_N)
    assert versus_args.SAMPLERS == tuple(versus.DDPM_SAMPLERS)
    assert set(sweep_args.BUILTIN) == set(spec.builtin_specs())
    assert evaluate_args.SETTINGS == {k: getattr(evaluate.DEFAULT, k) for k in evaluate_args.SETTINGS}
    assert evaluate_args.QUICK == {k: getattr(evaluate.QUICK, k) for k in evaluate_args.QUICK}


def test_every_implementation_resolves():
    """Each command's 'module:function' names a function of a cli module (imported here, torch and all)."""
    import importlib

    for path, p in leaves():
        module, function = p.get_default("impl").split(":")
        assert callable(getattr(importlib.import_module(module), function)), path
