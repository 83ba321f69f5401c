"""A benchmark's command line as docs/benchmarks.md shows it."""

from __future__ import annotations

# Options whose value is a file of the machine that ran it: the docs leave them out.
_FILE_OPTIONS = ("--json", "--docs-path")


def shown(script: str, argv: list[str]) -> str:
    """`script` with its arguments, without where its files went."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FILE_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _FILE_OPTIONS)):
            kept.append(arg)
    return " ".join([f".venv/bin/python {script}", *kept])
