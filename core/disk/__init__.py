"""Disk tools: running qemu-img safely."""
