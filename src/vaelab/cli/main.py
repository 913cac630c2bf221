"""The `vaelab` command: the only entry point.

Parsing is light: the parsers (cli/args/) use argparse and torch-free registries only, so `vaelab --help`,
`--version` and `vaelab COMMAND --help` answer at once. Each command names its implementation as a string
('vaelab.cli.vae:cmd_train'); `dispatch` imports it (and torch with it) only when the command runs.

Every failure the user can fix ends as one line `vaelab: error: ...` and a non-zero exit code:
2 bad option or config, 3 data, 4 run folder, 5 training diverged, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from vaelab.cli.args import data, ddpm, evaluate, explore, report, represent, score, sweep, vae, versus
from vaelab.cli.common import DOCS
from vaelab.engine.interrupt import Interrupted, terminate_as_interrupt
from vaelab.errors import VaelabError
from vaelab.version import __version__

# Each parser module defines register(subparsers); adding a family of commands is one entry here.
COMMAND_MODULES = [data, vae, ddpm, sweep, report, evaluate, score, versus, explore, represent]

EPILOG = f"""first commands:
  vaelab demo                              train the report's conv VAE briefly, write every figure
  vaelab train --model conv --epochs 10 --out runs/conv
  vaelab figures runs/conv                 samples, reconstructions, latent space, interpolation
  vaelab evaluate runs/conv                likelihood, sample quality, latent structure -> metrics.json
  vaelab ddpm train --out runs/ddpm        the report's DDPM
  vaelab sweep beta --out runs/beta        the beta study
  vaelab reproduce --out runs/repro        every study, then the report

VAELAB_DATA (MNIST) or VAELAB_DATA_FASHION_MNIST: a folder of IDX files (read only), else the cache
(VAELAB_CACHE, default ~/.cache/vaelab) is filled on first use; VAELAB_THREADS caps CPU threads.
`vaelab COMMAND --help` for each command. Docs: {DOCS} (the site: `make docs`)."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="vaelab", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="A lab for VAEs (and a DDPM) on MNIST and Fashion-MNIST: train, look, measure, compare.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Import the command's implementation, named 'module:function' by its parser, and run it. The only import
    inside a function in vaelab's command line: torch comes with it, so parsing and --help never pay for it."""
    module, _, function = args.impl.partition(":")
    importlib.import_module("vaelab.cli.runtime").prepare()
    return int(getattr(importlib.import_module(module), function)(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, turn known failures into one-line messages and exit codes."""
    args = build_parser().parse_args(argv)
    try:
        with terminate_as_interrupt():
            return dispatch(args)
    except VaelabError as e:
        print(f"vaelab: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"\nvaelab: interrupted ({e}); every completed epoch is saved: continue a run with --resume, a "
              "sweep or a reproduction with the same command", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\nvaelab: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"vaelab: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug, not a user error: keep it short unless asked
        if os.environ.get("VAELAB_DEBUG"):
            traceback.print_exc()
        print(f"vaelab: internal error: {type(e).__name__}: {e} (VAELAB_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70


def main_exit() -> None:
    """Console-script entry: exit with main()'s code."""
    sys.exit(main())
