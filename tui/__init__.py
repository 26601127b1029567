"""The admin terminal UI and the imagehub command line."""
