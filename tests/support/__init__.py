"""What the tests and the benchmarks share: a server process, PostgreSQL databases of their own,
stream readers, credentials."""

from pathlib import Path

# The checkout: README, demos/, deploy/ and docs/ are read by tests of them.
REPO = Path(__file__).resolve().parents[2]
