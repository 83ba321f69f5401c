"""Sources: one module per broker, messages into the log (bridges/base.py, Source)."""
