"""The commands' arguments, one module per command family: argparse and torch-free registries only, so that
`vaelab COMMAND --help` answers at once. Each parser names its implementation ('vaelab.cli.vae:cmd_train'),
which cli/main.py imports when the command runs."""
