"""A real Debian guest for the end-to-end tests: its build and its serial console."""
