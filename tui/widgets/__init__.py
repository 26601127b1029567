"""Widgets of the imagehub TUI."""
