"""Credentials for security tests: tokens signed with PyJWT, keys made on the spot, a JWKS server,
and hand-made tokens for the attacks PyJWT itself refuses to produce (alg none, HS/RS confusion).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

SECRET = "test-secret-that-is-long-enough-for-hs256!"
ISSUER = "https://issuer.test"
AUDIENCE = "watchroute-tests"


def claims(sub: str = "alice", scope: str = "read:* write:* watch:*", ttl: float = 600, **more: Any) -> dict:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": sub,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    body.update(more)
    return {k: v for k, v in body.items() if v is not None}


def hs_token(secret: str = SECRET, **kw: Any) -> str:
    return jwt.encode(claims(**kw), secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def crafted(header: dict, payload: dict, sign: Any = None) -> str:
    """A token assembled by hand: `sign(signing_input) -> bytes`, or no signature at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64(signature)}"


def hmac_with(key: bytes) -> Any:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def new_keys() -> dict[str, tuple[Any, str]]:
    """A private key per asymmetric algorithm the server accepts: {alg: (key, kid)}."""
    return {
        "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-1"),
        "ES256": (ec.generate_private_key(ec.SECP256R1()), "ec-1"),
        "EdDSA": (ed25519.Ed25519PrivateKey.generate(), "ed-1"),
    }


def jwk(alg: str, key: Any, kid: str) -> dict:
    algorithm = jwt.get_algorithm_by_name(alg)
    data = json.loads(algorithm.to_jwk(key.public_key()))
    data.update(kid=kid, use="sig")
    return data


class JWKSServer:
    """A JWKS URL on loopback whose key set a test may change."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[JWKSServer]:
        self.thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


def apikey_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchroute", "apikey", *args, "--database", database],
        capture_output=True,
        text=True,
        timeout=30,
    )


def create_apikey(database: str, *scopes: str, subject: str | None = None) -> tuple[str, str]:
    """(id, key) of a new key, made with the CLI as an operator would."""
    args = ["create"]
    for s in scopes:
        args += ["--scope", s]
    if subject:
        args += ["--subject", subject]
    done = apikey_cli(database, *args)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    return made["id"], made["key"]


def write_pem(path: Path, key: Any) -> str:
    path.write_bytes(pem_public(key))
    return str(path)


def throwaway_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
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
