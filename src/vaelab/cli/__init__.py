"""The command line (main.py): argument parsing and printing only; the work is done by the packages below."""
