"""TLS served directly: HTTPS and WSS with a throwaway certificate made by the test."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.security_keys import throwaway_certificate

pytestmark = pytest.mark.timeout(60)


async def test_https_and_wss(make_server: Any, tmp_path: Path) -> None:
    cert, key = throwaway_certificate(tmp_path)
    proc = make_server(tls_cert=cert, tls_key=key)
    assert proc.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))  # trusts this certificate and nothing else
    async with httpx.AsyncClient(base_url=proc.url, verify=trust, timeout=10) as https:
        r = await https.put("/v1/tls/a", json={"secure": True})
        assert r.status_code == 201
        async with https.stream(
            "GET", "/v1/tls", params={"watch": "true", "initial": "true", "timeout": 1}
        ) as stream:
            first = json.loads(await anext(stream.aiter_lines()))
        assert first["object"]["data"] == {"secure": True}
    wss = proc.url.replace("https://", "wss://") + "/v1/_watch"
    async with connect(wss, ssl=trust) as ws:
        await ws.send(json.dumps({"op": "subscribe", "sub": "s", "collection": "tls", "initial": True}))
        assert json.loads(await ws.recv())["type"] == "SUBSCRIBED"
        assert json.loads(await ws.recv())["object"]["id"] == "a"
    # Plain HTTP on the TLS port is not served, and an untrusting client refuses the certificate.
    with pytest.raises(httpx.HTTPError):
        httpx.get(proc.url.replace("https://", "http://") + "/healthz", timeout=3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(proc.url + "/healthz", timeout=3)
