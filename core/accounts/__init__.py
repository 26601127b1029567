"""Tenants, accounts and their SSH keys."""
