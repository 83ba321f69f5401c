"""`make serve` works from a fresh clone in an empty directory (CI runs `make test` that way)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import REPO
from tests.support.server import free_port


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_make_serve_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "WATCHROUTE_"))}
    env["WATCHROUTE_PORT"] = str(port)
    log = open(tmp_path / "make.log", "wb")  # noqa: SIM115 - owned by the process
    make = subprocess.Popen(
        ["make", "serve"], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline:
            assert make.poll() is None, (tmp_path / "make.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("make serve did not bring the server up")
        r = httpx.put(f"http://127.0.0.1:{port}/v1/things/one", json={"ok": True})
        assert r.status_code == 201
        assert (clone / "watchroute.db").exists(), "the default database is ./watchroute.db"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
