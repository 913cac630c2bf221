"""The command line (main.py): argument parsing (args/, no torch) and printing only (one module per command
family beside main.py, imported when its command runs); the work is done by the packages below."""
