"""The data path without the web: changes, the window, the tailer, the hub and its watchers.

Nothing here imports the HTTP layer, security or settings (tests/unit/test_layers.py holds the
rule), so a test can drive the whole path with a store and no server."""
