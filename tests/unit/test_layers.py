"""The dependency rule (docs/architecture.md, *Layers*): each layer imports only those below it,
the core and the wire no web framework, the client nothing of the server side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the data path must not drag in: the web framework, tokens, and the layers above it.
WEB = {"starlette", "fastapi", "uvicorn", "jwt", "pydantic", "pydantic_settings"}
DATA_PATH = [
    "watchroute.core.hub",
    "watchroute.core.watcher",
    "watchroute.core.tailer",
    "watchroute.transports.delivery",
]


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    "module",
    [
        "watchroute.core.hub",
        "watchroute.core.watcher",
        "watchroute.core.tailer",
        "watchroute.transports.delivery",
    ],
)
def test_the_data_path_loads_no_web_framework_and_no_security(module: str) -> None:
    """Checked in a fresh interpreter: what importing the module loads, not what it names."""
    probe = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert module in loaded
    dragged = [
        m
        for m in loaded
        if m.split(".")[0] in WEB or m.startswith("watchroute.security") or m == "watchroute.settings"
    ]
    assert not dragged, f"importing {module} loads {dragged}"
