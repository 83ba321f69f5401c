"""At the door, against real servers: the Host allow-list (no DNS rebinding), forwarded addresses
believed only from configured proxies, and `/metrics` behind the `metrics` scope."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import httpx
import pytest

from tests.support.security_keys import AUDIENCE, ISSUER, SECRET, create_apikey, hs_token
from tests.support.server import ServerFactory, ServerProcess


@pytest.fixture(scope="module")
def open_server(shared_server: ServerProcess) -> ServerProcess:
    """--auth none, the default: the server a rebinding page would aim at."""
    return shared_server


def request(port: int, head: str) -> bytes:
    """Send a raw request head and return the status line (the Host is the test's to choose)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def upgrade(port: int, path: str, host: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return request(
        port,
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )


# -- Host ------------------------------------------------------------------------------------


def test_a_rebound_name_cannot_write(open_server: ServerProcess) -> None:
    port = open_server.port
    evil = f"evil.example:{port}"
    with httpx.Client(base_url=open_server.url, timeout=5) as client:
        refused = client.put(
            "/v1/rebind/d1", json={"x": 1}, headers={"Host": evil, "Origin": f"http://{evil}"}
        )
        assert refused.status_code == 421
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["reason"] == "HostNotAllowed"
        # Nothing was written, and reads under that name are refused too.
        assert client.get("/v1/rebind/d1").status_code == 404
        assert client.get("/v1/rebind", headers={"Host": evil}).status_code == 421
        assert client.get("/readyz", headers={"Host": evil}).status_code == 421
        # A liveness probe may come by any address; the answer says nothing.
        assert client.get("/healthz", headers={"Host": evil}).status_code == 200


def test_a_rebound_name_cannot_open_a_websocket(open_server: ServerProcess) -> None:
    port = open_server.port
    for path in ("/v1/_watch", "/v1/rebind?watch=true"):
        assert upgrade(port, path, f"evil.example:{port}") == b"HTTP/1.1 421 Misdirected Request"
        assert upgrade(port, path, f"localhost:{port}") == b"HTTP/1.1 101 Switching Protocols"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "LOCALHOST", "[::1]"])
def test_the_loopback_names_are_answered(open_server: ServerProcess, host: str) -> None:
    port = open_server.port
    with httpx.Client(base_url=open_server.url, timeout=5) as client:
        for name in (f"{host}:{port}", host):
            origin = f"http://{name}"
            written = client.put("/v1/names/d1", json={"by": name}, headers={"Host": name, "Origin": origin})
            assert written.status_code in (200, 201), written.text


def test_allowed_hosts_widens_the_list(make_server) -> None:
    server = make_server(allowed_hosts="app.example, other.example")
    port = server.port
    with httpx.Client(base_url=server.url, timeout=5) as client:
        app = f"app.example:{port}"
        written = client.put("/v1/names/d1", json={}, headers={"Host": app, "Origin": f"http://{app}"})
        assert written.status_code == 201
        assert client.get("/v1/names/d1", headers={"Host": "Other.Example"}).status_code == 200
        assert client.get("/v1/names/d1", headers={"Host": f"127.0.0.1:{port}"}).status_code == 200
        assert client.get("/v1/names/d1", headers={"Host": f"evil.example:{port}"}).status_code == 421
    assert upgrade(port, "/v1/_watch", app) == b"HTTP/1.1 101 Switching Protocols"


def test_a_star_answers_any_host(make_server) -> None:
    server = make_server(allowed_hosts="*")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/v1/names", headers={"Host": "anything.example"}).status_code == 200


# -- X-Forwarded-For -------------------------------------------------------------------------


def audited_addresses(server: ServerProcess) -> list[str]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"ts"')]
    return [line["address"] for line in lines if line.get("audit") == "rate_limited"]


def first_refusal(client: httpx.Client, forwarded_for: list[str]) -> int | None:
    for n, address in enumerate(forwarded_for):
        if client.get("/v1/fwd", headers={"X-Forwarded-For": address}).status_code == 429:
            return n
    return None


def test_forwarded_for_is_not_believed_by_default(make_server) -> None:
    server = make_server(rate_limit_ip="5/m")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        # Each request claims another address; all are counted as the loopback they came from.
        refused_at = first_refusal(client, [f"1.2.3.{n}" for n in range(1, 10)])
        assert refused_at is not None and refused_at <= 5
    assert audited_addresses(server) == ["127.0.0.1"]


def test_forwarded_for_is_believed_from_a_configured_proxy(make_server) -> None:
    server = make_server(rate_limit_ip="5/m", forwarded_allow_ips="127.0.0.1")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert first_refusal(client, [f"1.2.3.{n}" for n in range(10, 30)]) is None
        refused_at = first_refusal(client, ["1.2.3.4"] * 8)
        assert refused_at == 5
    assert audited_addresses(server) == ["1.2.3.4"]


def test_forwarded_allow_ips_must_be_addresses(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="forwarded-allow-ips"):
        ServerProcess(tmp_path, forwarded_allow_ips="127.0.0.1,proxy.example").start(timeout=10)


# -- /metrics --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers("jwt", auth="jwt", jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


def test_metrics_need_the_metrics_scope_under_jwt(jwt_server: ServerProcess) -> None:
    with httpx.Client(base_url=jwt_server.url, timeout=5) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401 and missing.json()["reason"] == "Unauthorized"
        assert "watchroute_" not in missing.text
        everything_else = hs_token(scope="read:* write:* watch:*")
        refused = client.get("/metrics", headers={"Authorization": f"Bearer {everything_else}"})
        assert refused.status_code == 403 and refused.json()["reason"] == "Forbidden"
        assert "metrics" in refused.json()["detail"]
        scraper = hs_token(sub="prometheus", scope="metrics")
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert scraped.status_code == 200
        assert "watchroute_revision" in scraped.text or "watchroute_" in scraped.text
        # The scope opens /metrics only, no collection.
        assert client.get("/v1/x", headers={"Authorization": f"Bearer {scraper}"}).status_code == 403
        # The other system routes stay public; the API document says what /metrics asks for.
        assert client.get("/readyz").status_code == 200
        described = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
        assert described["security"] and {"401", "403"} <= set(described["responses"])


def test_the_dashboards_status_figures_need_the_metrics_scope_too(jwt_server: ServerProcess) -> None:
    # A few of /metrics' figures: they must not be open where /metrics is closed.
    with httpx.Client(base_url=jwt_server.url, timeout=5) as client:
        assert client.get("/ui/status.json").status_code == 401
        reader = hs_token(scope="read:* watch:*")
        refused = client.get("/ui/status.json", headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403 and "metrics" in refused.json()["detail"]
        scraper = hs_token(sub="operator", scope="metrics")
        shown = client.get("/ui/status.json", headers={"Authorization": f"Bearer {scraper}"})
        assert shown.status_code == 200 and "revision" in shown.json()
        assert client.get("/ui").status_code == 200  # the page itself stays public


def test_metrics_need_the_metrics_scope_under_apikey(make_server) -> None:
    server = make_server(auth="apikey")
    _, reader = create_apikey(server.database, "read:*")
    _, scraper = create_apikey(server.database, "metrics", subject="prometheus")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": reader}).status_code == 403
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert scraped.status_code == 200 and "watchroute_" in scraped.text


def test_metrics_stay_public_without_authentication(open_server: ServerProcess) -> None:
    scraped = httpx.get(open_server.url + "/metrics", timeout=5)
    assert scraped.status_code == 200 and "watchroute_" in scraped.text
