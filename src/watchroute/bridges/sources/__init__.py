"""Inbound sources: one module per broker, each a `Source` (bridges/base.py)."""
