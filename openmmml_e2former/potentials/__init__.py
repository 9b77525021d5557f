"""Shipped potentials: <name>.pt checkpoints and <name>.md model cards (package data)."""
