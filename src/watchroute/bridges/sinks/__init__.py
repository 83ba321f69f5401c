"""Sinks: one module per broker, changes out of the log (bridges/base.py, Sink)."""
