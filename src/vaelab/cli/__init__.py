"""The command line: argument parsing and printing only; the work is done by the packages below."""

from vaelab.cli.main import build_parser, main, main_exit

__all__ = ["build_parser", "main", "main_exit"]
