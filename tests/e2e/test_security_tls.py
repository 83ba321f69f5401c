"""TLS served directly: HTTPS and WSS with a throwaway certificate made by the test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(60)


def throwaway_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watchroute test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


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
