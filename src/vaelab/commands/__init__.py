"""CLI subcommands, one module per family; each exposes register(subparsers)."""
