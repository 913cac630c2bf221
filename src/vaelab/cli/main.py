"""The `vaelab` command: the only entry point. Subcommands live in vaelab/commands/*.py.

Every failure the user can fix ends as one line `vaelab: error: ...` and a non-zero exit code:
2 bad option or config, 3 data, 4 run folder, 5 training diverged, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from vaelab import __version__

# Each module defines register(subparsers); adding a family of commands is one line here.
COMMAND_MODULES = [
    "vaelab.cli.data",
    "vaelab.cli.vae",
    "vaelab.cli.ddpm",
    "vaelab.cli.sweep",
    "vaelab.cli.report",
    "vaelab.cli.evaluate",
    "vaelab.cli.versus",
]

EPILOG = """examples:
  vaelab demo                                  train the report's conv VAE briefly, write every figure
  vaelab train --model dense --epochs 10 --out runs/dense
  vaelab train --model conv --arch 32-64-128 --latent-dim 10 --beta 1 --epochs 10 --out runs/conv
  vaelab figures runs/conv                     samples, reconstructions, latent space, interpolation
  vaelab data info                             where MNIST is read from and whether it verifies

Set VAELAB_DATA to an MNIST folder (read only) to skip the download; VAELAB_THREADS caps CPU threads."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="vaelab", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="A lab for VAEs (and a DDPM) on MNIST: train, look, measure, compare.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def set_threads() -> None:
    """Honour VAELAB_THREADS (parallel sweeps and tests give each process its share of the cores)."""
    n = os.environ.get("VAELAB_THREADS")
    if n:
        import torch

        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise SystemExit(f"vaelab: error: VAELAB_THREADS must be an integer (got {n!r})") from None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, turn known failures into one-line messages and exit codes."""
    from vaelab.errors import VaelabError
    from vaelab.engine.interrupt import Interrupted

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


if __name__ == "__main__":
    main_exit()
