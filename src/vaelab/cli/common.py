"""Argument types and options shared by several subcommands (argparse and torch-free registries only: the
parser modules in cli/args/ build `vaelab COMMAND --help` from them without importing torch)."""

from __future__ import annotations

import argparse

from vaelab.data.registry import DATASETS, DEFAULT

DOCS = "docs/commands.md"  # the commands page of the docs site (`make docs`); each command has an anchor there


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, except that a description or epilog keeps its paragraphs (separated by a blank line): each
    is wrapped to the terminal, unless it holds an indented line (a table, an example file), which stays as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n\n".join(par if any(line.startswith("  ") for line in par.splitlines()) else fill(par, width, indent)
                           for par in text.split("\n\n"))


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str, impl: str | None = None,
                anchor: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with its docs page, and whose work is `impl`: 'vaelab.cli.MODULE:FUNCTION',
    imported only when the command runs (None for a group such as `ddpm`, whose actions name theirs)."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    p = sub.add_parser(name, help=help, description=description, epilog=f"Docs: {DOCS}#{anchor or name}", **kwargs)
    if impl is not None:
        p.set_defaults(impl=impl)
    return p


def int_at_least(low: int):
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} (got {value})")
        return value
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def finite_float(text: str) -> float:
    """argparse type: a finite real number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite (got {text})")
    return value


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """--data-dir: a read-only folder with the dataset's IDX files (else its variable, the cache, a download)."""
    env = ", ".join(f"${d.env_var} ({d.title})" for d in DATASETS.values())
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help=f"folder with the dataset's four IDX files, raw or .gz (read only; default: {env}, "
                        "else the cache ~/.cache/vaelab/NAME, filled on first use)")


def add_dataset(p: argparse.ArgumentParser, of_run: bool = False) -> None:
    """--dataset NAME, choices from the dataset registry, and --data-dir."""
    names = ", ".join(f"{d.name} ({d.title})" for d in DATASETS.values())
    p.add_argument("--dataset", choices=list(DATASETS), default=None, metavar="NAME",
                   help=(f"the dataset: {names}; default: the one the run was trained on" if of_run
                         else f"the dataset: {names} (default {DEFAULT})"))
    add_data_dir(p)


def dataset_of(args: argparse.Namespace) -> str:
    """--dataset, or the default dataset when it was not given."""
    return args.dataset or DEFAULT


def add_together(p: argparse.ArgumentParser) -> None:
    """--together: train runs that differ only in beta as one stacked model (vaelab train-together)."""
    p.add_argument("--together", choices=["auto", "always", "never"], default="auto",
                   help="train runs whose configs differ only in beta in one process, as one stacked model "
                        "(one vmapped step for all): auto (default) on CUDA only, always, or never (when it pays: "
                        "docs/performance.md)")


def add_divergence(p: argparse.ArgumentParser) -> None:
    """--on-divergence and --divergence-factor: what training does when an epoch's loss jumps."""
    p.add_argument("--on-divergence", choices=["stop", "rollback"], default=None,
                   help="when an epoch's training loss jumps above --divergence-factor times the best epoch's "
                        "(or turns NaN): stop (default; exit code 5, the last good checkpoint kept) or rollback "
                        "(back to that checkpoint at half the learning rate, noted in metrics.jsonl); may be "
                        "changed with --resume")
    p.add_argument("--divergence-factor", type=finite_float, default=None,
                   help="the jump that counts as divergence (default 3; 0: do not check)")


def divergence_changes(args) -> dict:
    """The train-config fields that --on-divergence and --divergence-factor set (only those given)."""
    given = {"on_divergence": args.on_divergence, "divergence_factor": args.divergence_factor}
    return {k: v for k, v in given.items() if v is not None}


def add_tensorboard(p: argparse.ArgumentParser) -> None:
    """--tensorboard: TensorBoard logs in each run folder (RUN/tb), the optional extra."""
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs into the run folder (RUN/tb): per-step loss, reconstruction "
                        "and KL, per-epoch metrics, learning rate, images/s, samples and reconstructions, the "
                        "config; view with `tensorboard --logdir runs/` (needs pip install 'vaelab[tensorboard]')")
