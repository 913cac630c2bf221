"""`python -m vaelab.cli`: the same as the `vaelab` command."""

from vaelab.cli.main import main_exit

main_exit()
