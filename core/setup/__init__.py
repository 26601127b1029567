"""Setting up: `imagehub init` and the demo catalog."""
