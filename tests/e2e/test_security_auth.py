"""Authentication against real servers: every refusal is a 401 (a missing grant a 403), every
accepted key type works, and no token ever reaches the server's log."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.security_keys import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JWKSServer,
    apikey_cli,
    claims,
    crafted,
    create_apikey,
    hmac_with,
    hs_token,
    jwk,
    new_keys,
    pem_public,
    write_pem,
)
from tests.support.server import ServerFactory, ServerProcess

KEYS = new_keys()


def start(tmp: Path, **settings: Any) -> ServerProcess:
    return ServerProcess(tmp, **settings).start()


@pytest.fixture(scope="module")
def hs(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        "hs", auth="jwt", jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_leeway=5
    )


@pytest.fixture(scope="module")
def rsa_server(module_servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    pem = write_pem(tmp_path_factory.mktemp("rsa-key") / "rsa.pem", KEYS["RS256"][0])
    return module_servers("rsa", auth="jwt", jwt_public_key=pem, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


def get(proc: ServerProcess, token: str | None, path: str = "/v1/notes") -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(proc.url + path, headers=headers, timeout=10)


def assert_refused(r: httpx.Response, status: int = 401, reason: str = "Unauthorized") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["reason"] == reason
    if status == 401:
        assert r.headers["www-authenticate"].startswith('Bearer realm="watchroute"')
    return body


def test_a_valid_token_is_served(hs: ServerProcess) -> None:
    assert get(hs, hs_token()).status_code == 200


def test_missing_credentials(hs: ServerProcess) -> None:
    body = assert_refused(get(hs, None))
    assert "missing" in body["detail"]
    assert_refused(httpx.get(hs.url + "/v1/notes", headers={"Authorization": "Basic YTpi"}))


@pytest.mark.parametrize("token", ["abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "x" * 5000])
def test_malformed(hs: ServerProcess, token: str) -> None:
    assert_refused(get(hs, token))


def test_expired(hs: ServerProcess) -> None:
    body = assert_refused(get(hs, hs_token(ttl=-60)), reason="TokenExpired")
    assert "expired" in body["detail"]


def test_within_the_leeway_is_accepted(hs: ServerProcess) -> None:
    assert get(hs, hs_token(ttl=-2)).status_code == 200  # leeway 5 s


def test_not_yet_valid(hs: ServerProcess) -> None:
    assert_refused(get(hs, hs_token(nbf=int(time.time()) + 3600)), reason="TokenNotYetValid")


def test_wrong_issuer(hs: ServerProcess) -> None:
    body = assert_refused(get(hs, hs_token(iss="https://evil.test")))
    assert "issuer" in body["detail"]
    assert_refused(get(hs, hs_token(iss=None)))


def test_wrong_audience(hs: ServerProcess) -> None:
    body = assert_refused(get(hs, hs_token(aud="another-service")))
    assert "audience" in body["detail"]
    assert_refused(get(hs, hs_token(aud=None)))


def test_required_claims(hs: ServerProcess) -> None:
    assert_refused(get(hs, jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET)))
    assert_refused(get(hs, jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET)))


def test_alg_none(hs: ServerProcess) -> None:
    for alg in ("none", "None", "NONE"):
        body = assert_refused(get(hs, crafted({"alg": alg, "typ": "JWT"}, claims())))
        assert "algorithm" in body["detail"]


def test_tampered_signature(hs: ServerProcess) -> None:
    token = hs_token(sub="alice", scope="read:notes")
    header, _, signature = token.split(".")
    forged = crafted({"alg": "HS256", "typ": "JWT"}, claims(sub="alice", scope="read:* write:*"))
    tampered = ".".join([header, forged.split(".")[1], signature])  # alice's signature, new claims
    body = assert_refused(get(hs, tampered))
    assert "signature" in body["detail"]
    assert_refused(get(hs, hs_token(secret="another-secret-that-is-long-enough-too")))


def test_missing_grant_is_403(hs: ServerProcess) -> None:
    token = hs_token(scope="read:stocks watch:chat-*")
    assert get(hs, token, "/v1/stocks").status_code == 200
    body = assert_refused(get(hs, token, "/v1/notes"), 403, "Forbidden")
    assert "read:notes" in body["detail"]
    r = httpx.put(hs.url + "/v1/stocks/A", json={"p": 1}, headers={"Authorization": f"Bearer {token}"})
    assert_refused(r, 403, "Forbidden")
    # A watch is refused before any streaming starts: a plain HTTP 403.
    r = get(hs, token, "/v1/stocks?watch=true")
    assert_refused(r, 403, "Forbidden")
    assert get(hs, token, "/v1/chat-room1?watch=longpoll&timeout=0.1").status_code == 200
    assert_refused(get(hs, token, "/v1/chatroom?watch=longpoll&timeout=0.1"), 403, "Forbidden")


def test_public_routes_need_no_token(hs: ServerProcess) -> None:
    for path in ("/healthz", "/openapi.json"):
        assert httpx.get(hs.url + path).status_code == 200


def test_rs256_pem(rsa_server: ServerProcess) -> None:
    key, _ = KEYS["RS256"]
    assert get(rsa_server, jwt.encode(claims(), key, algorithm="RS256")).status_code == 200
    other = new_keys()["RS256"][0]
    assert_refused(get(rsa_server, jwt.encode(claims(), other, algorithm="RS256")))


def test_hs_rs_confusion(rsa_server: ServerProcess) -> None:
    """The classic attack: sign HS256 with the server's *public* RSA key as the HMAC secret."""
    public_pem = pem_public(KEYS["RS256"][0])
    token = crafted({"alg": "HS256", "typ": "JWT"}, claims(), hmac_with(public_pem))
    body = assert_refused(get(rsa_server, token))
    assert "algorithm" in body["detail"]
    # And the other way: an ES256 token to a server that only holds an RSA key.
    es = jwt.encode(claims(), KEYS["ES256"][0], algorithm="ES256")
    assert_refused(get(rsa_server, es))


def test_jwks_every_algorithm_and_refresh(tmp_path: Path) -> None:
    jwks = JWKSServer()
    jwks.keys = [jwk(alg, key, kid) for alg, (key, kid) in KEYS.items()]
    with jwks.running():
        proc = start(tmp_path, auth="jwt", jwks_url=jwks.url, jwks_cache_seconds=1, jwt_audience=AUDIENCE)
        try:
            for alg, (key, kid) in KEYS.items():
                token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
                assert get(proc, token).status_code == 200, alg
            # An HS256 token naming a JWKS key id, "signed" with that key's public JWK text.
            rsa_jwk = json.dumps(jwks.keys[0]).encode()
            confused = crafted({"alg": "HS256", "kid": "rsa-1"}, claims(), hmac_with(rsa_jwk))
            assert_refused(get(proc, confused))
            # A key added at the issuer is found once the cache is stale (1 s here).
            fresh = new_keys()["ES256"][0]
            token = jwt.encode(claims(), fresh, algorithm="ES256", headers={"kid": "ec-2"})
            jwks.keys.append(jwk("ES256", fresh, "ec-2"))
            time.sleep(1.2)
            assert get(proc, token).status_code == 200
            fetches = jwks.fetches
            for _ in range(5):  # cached: no fetch per request
                assert get(proc, token).status_code == 200
            assert jwks.fetches == fetches
            unknown = jwt.encode(claims(), fresh, algorithm="ES256", headers={"kid": "nope"})
            assert_refused(get(proc, unknown))
        finally:
            proc.stop()


def test_an_unreachable_key_set_is_a_503_not_a_refusal(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/jwks.json"
    proc = start(tmp_path, auth="jwt", jwks_url=dead, jwt_audience=AUDIENCE)
    try:
        key, kid = KEYS["ES256"]
        token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid})
        assert_refused(get(proc, token), 503, "KeysUnavailable")
    finally:
        proc.stop()


def test_api_keys(tmp_path: Path) -> None:
    proc = start(tmp_path, auth="apikey", apikey_cache_seconds=0.5)
    try:
        id, key = create_apikey(proc.database, "read:notes", "write:notes", subject="svc")
        assert key.startswith("wr_") and id in key
        r = httpx.put(proc.url + "/v1/notes/a", json={"x": 1}, headers={"X-API-Key": key})
        assert r.status_code == 201, r.text
        assert get(proc, key).status_code == 200  # Authorization: Bearer works too
        assert_refused(get(proc, key, "/v1/stocks"), 403, "Forbidden")
        assert_refused(get(proc, key[:-2] + "xx"))  # right id, wrong secret
        assert_refused(get(proc, "wr_nope"))
        listed = [json.loads(line) for line in apikey_cli(proc.database, "list").stdout.splitlines()]
        assert [k["id"] for k in listed] == [id] and listed[0]["state"] == "active"
        assert key not in (Path(proc.database[len("sqlite:///") :]).read_bytes().decode("latin-1"))
        assert apikey_cli(proc.database, "revoke", id).returncode == 0
        deadline = time.monotonic() + 5
        while get(proc, key).status_code == 200:  # within apikey_cache_seconds
            assert time.monotonic() < deadline, "a revoked key kept working"
            time.sleep(0.1)
        assert_refused(get(proc, key))
        assert apikey_cli(proc.database, "revoke", id).returncode == 3
        assert apikey_cli(proc.database, "create", "--scope", "admin").returncode == 2
    finally:
        proc.stop()
    assert key not in proc.log_path.read_text()


def test_revoking_a_key_ends_the_watches_open_with_it(tmp_path: Path) -> None:
    proc = start(tmp_path, auth="apikey", apikey_cache_seconds=0.5)
    try:
        id, key = create_apikey(proc.database, "read:notes", "watch:notes")
        _, other = create_apikey(proc.database, "read:notes", "watch:notes")
        _, writer = create_apikey(proc.database, "write:notes")
        sse = {"Accept": "text/event-stream"}
        url = proc.url + "/v1/notes?watch=true"
        with (
            httpx.stream("GET", url, headers={**sse, "X-API-Key": key}, timeout=10) as doomed,
            httpx.stream("GET", url, headers={**sse, "X-API-Key": other}, timeout=10) as kept,
        ):
            assert doomed.status_code == kept.status_code == 200
            assert apikey_cli(proc.database, "revoke", id).returncode == 0
            started = time.monotonic()
            ended = [json.loads(line[6:]) for line in doomed.iter_lines() if line.startswith("data: ")]
            assert time.monotonic() - started < 5
            assert ended[-1]["type"] == "ERROR"
            assert (ended[-1]["error"]["status"], ended[-1]["error"]["reason"]) == (401, "KeyRevoked")
            # The watch of a key that still stands goes on.
            r = httpx.put(proc.url + "/v1/notes/n", json={"x": 1}, headers={"X-API-Key": writer})
            assert r.status_code == 201
            data = (json.loads(line[6:]) for line in kept.iter_lines() if line.startswith("data: "))
            assert next(data)["object"]["id"] == "n"
    finally:
        proc.stop()


def test_token_in_query_and_cookie_never_logged(hs: ServerProcess) -> None:
    token = hs_token(scope="watch:notes read:notes")
    r = httpx.get(hs.url + "/v1/notes", params={"watch": "longpoll", "timeout": 0.1, "access_token": token})
    assert r.status_code == 200
    r = httpx.get(hs.url + "/v1/notes", cookies={"access_token": token})
    assert r.status_code == 200
    # Refusals with tokens in every place a token may travel.
    bad = hs_token(ttl=-60)
    httpx.get(hs.url + "/v1/notes", params={"watch": "true", "access_token": bad})
    httpx.get(hs.url + "/v1/notes", params={"access_token": bad, "filter": "(("}, headers={"Cookie": "x"})
    httpx.get(hs.url + "/v1/stocks", cookies={"access_token": token})
    # The query token is gone before routing: it is not echoed in a parameter error either.
    r = httpx.get(hs.url + "/v1/notes", params={"access_token": token, "limit": "x"})
    assert r.status_code == 400 and token not in r.text
    time.sleep(0.2)
    log = hs.log_path.read_text()
    assert '"audit": "auth_failed"' in log or '"audit":"auth_failed"' in log
    assert token not in log and bad not in log and SECRET not in log
    for line in log.splitlines():
        if '"audit"' in line:
            entry = json.loads(line)
            assert {"audit", "subject", "address", "why"} <= entry.keys()
