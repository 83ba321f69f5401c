"""Takes the README's screenshots of the `/ui` console: a server of its own with a little data,
the console wide and at 400 px, and the editor showing a 412 conflict.

    .venv/bin/python scripts/ui_screenshots.py [docs/images]

Needs Chromium (Debian: apt-get install chromium) and playwright (in the test extras).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

SHIPS = [
    ("atlas", {"name": "Atlas", "speed": 12.5, "state": "sailing", "pos": {"lat": 43.3, "lon": 5.4}}),
    ("borealis", {"name": "Borealis", "speed": 0, "state": "docked", "pos": {"lat": 51.9, "lon": 4.5}}),
    ("corsair", {"name": "Corsair", "speed": 18.2, "state": "sailing", "crew": ["ana", "ben", "chloe"]}),
    ("dauntless", {"name": "Dauntless", "speed": 7.9, "state": "sailing", "pos": {"lat": 36.1, "lon": -5.3}}),
    ("esperance", {"name": "Esperance", "speed": 0, "state": "repair"}),
]


def serve(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "WATCHROUTE_PORT": str(port),
        "WATCHROUTE_DATABASE": f"sqlite:///{workdir / 'watchroute.db'}",
        "WATCHROUTE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "watchroute", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("the server did not start")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as workdir:
        proc, url = serve(Path(workdir))
        try:
            for id, data in SHIPS:
                httpx.put(f"{url}/v1/ships/{id}", json=data)
            for port in ("marseille", "rotterdam"):
                httpx.put(f"{url}/v1/ports/{port}", json={"berths": 12})
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
                wide = browser.new_page(viewport={"width": 1280, "height": 640})
                wide.goto(f"{url}/ui?collection=ships")
                wide.wait_for_selector("#state[data-state=live]")
                httpx.patch(
                    f"{url}/v1/ships/atlas",
                    json={"speed": 13.1},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                wide.click("#resources [data-sort=speed]")
                time.sleep(2.5)  # two status readings: the rates have figures
                wide.screenshot(path=out / "ui-console.png")

                wide.click("#resources tbody tr[data-id=corsair] td")
                httpx.put(f"{url}/v1/ships/corsair", json={**SHIPS[2][1], "speed": 19.0})
                wide.fill("#editor-text", '{\n  "name": "Corsair",\n  "speed": 17,\n  "state": "sailing"\n}')
                wide.click("#save-patch")
                wide.wait_for_selector("#conflict:not([hidden])")
                wide.screenshot(path=out / "ui-conflict.png", full_page=True)

                narrow = browser.new_page(viewport={"width": 400, "height": 760})
                narrow.goto(f"{url}/ui?collection=ships")
                narrow.wait_for_selector("#state[data-state=live]")
                narrow.screenshot(path=out / "ui-console-400.png")
                browser.close()
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
