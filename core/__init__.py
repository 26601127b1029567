"""imagehub's core: catalog, rules and I/O. Knows nothing of the TUI, the CLI or the servers."""
