"""Screens of the imagehub TUI: one per page, modal screens for dialogs."""
