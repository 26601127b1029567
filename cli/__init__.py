"""The `imagehub` command line: one module per command group, wired in cli/main.py."""
