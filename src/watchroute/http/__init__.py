"""HTTP routes: REST reads and writes, the watch route, batch and system routes."""
