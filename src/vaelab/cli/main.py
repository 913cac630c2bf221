"""The `vaelab` command: the only entry point. Each command family is a module beside this one.

Every failure the user can fix ends as one line `vaelab: error: ...` and a non-zero exit code:
2 bad option or config, 3 data, 4 run folder, 5 training diverged, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import torch

from vaelab.version import __version__
from vaelab.cli import data, ddpm, evaluate, explore, report, represent, score, sweep, vae, versus
from vaelab.engine.interrupt import Interrupted
from vaelab.errors import VaelabError

# Each module defines register(subparsers); adding a family of commands is one entry here.
COMMAND_MODULES = [data, vae, ddpm, sweep, report, evaluate, score, versus, explore, represent]

EPILOG = """examples:
  vaelab demo                                  train the report's conv VAE briefly, write every figure
  vaelab train --model dense --epochs 10 --out runs/dense
  vaelab train --model conv --arch 32-64-128 --latent-dim 10 --beta 1 --epochs 10 --out runs/conv
  vaelab figures runs/conv                     samples, reconstructions, latent space, interpolation
  vaelab train --dataset fashion-mnist --out runs/fashion    the same on Fashion-MNIST
  vaelab data info                             where MNIST is read from and whether it verifies
  vaelab evaluate runs/conv                    likelihood, sample quality, latent structure -> metrics.json
  vaelab score samples.npy                     sample quality of any generator's images (pinned classifier)
  vaelab explore runs/conv                     an interactive latent explorer: one offline HTML page
  vaelab sweep beta --out runs/beta --tensorboard          the beta study, logged for TensorBoard
  vaelab sweep beta --out /shared/beta --executor ray      the same on a Ray cluster
  vaelab represent runs/conv runs/ddpm --out runs/rep      how a VAE and a DDPM represent digits

From Python: import vaelab; vae = vaelab.load("runs/conv"); vae.sample(25) (see the README).

Set VAELAB_DATA (MNIST) or VAELAB_DATA_FASHION_MNIST to a folder of IDX files (read only) to skip the
download; VAELAB_CACHE moves the cache (default ~/.cache/vaelab); VAELAB_THREADS caps CPU threads."""


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


def set_threads() -> None:
    """Honour VAELAB_THREADS (parallel sweeps and tests give each process its share of the cores)."""
    n = os.environ.get("VAELAB_THREADS")
    if n:
        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise SystemExit(f"vaelab: error: VAELAB_THREADS must be an integer (got {n!r})") from None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, turn known failures into one-line messages and exit codes."""
    args = build_parser().parse_args(argv)
    try:
        set_threads()
        return int(args.func(args) or 0)
    except VaelabError as e:
        print(f"vaelab: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"\nvaelab: interrupted ({e}); the last completed epoch is saved, continue with --resume",
              file=sys.stderr)
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
