"""Compute: VMs from images, their drivers, the cloud-init seed, and capture back to an image."""
