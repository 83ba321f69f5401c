"""Tokens in URLs never reach the log: uvicorn quotes the URL of every WebSocket handshake (and,
with an access log, of every request) as the client sent it, `?access_token=` included."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from uvicorn.logging import AccessFormatter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerProcess
from tests.support.ws import recv, send, ws_url
from watchroute.security import redaction

pytestmark = pytest.mark.timeout(60)


async def test_tokens_in_websocket_urls_are_redacted_in_the_server_log(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        auth="jwt",
        jwt_secret=SECRET,
        jwt_audience=AUDIENCE,
        log_level="info",  # the level at which uvicorn logs every handshake
        rate_limit_identity="2/m",
    ).start()
    good = hs_token(sub="alice", scope="watch:notes read:notes")
    expired = hs_token(sub="alice", ttl=-60)
    flood = hs_token(sub="flood", scope="watch:notes")
    try:
        # Accepted: the multiplexed socket and a single watch.
        async with connect(ws_url(server, f"/v1/_watch?access_token={good}")) as ws:
            await send(ws, {"op": "ping"})
            assert (await recv(ws))["type"] == "PONG"
        async with connect(ws_url(server, f"/v1/notes?watch=true&access_token={good}&heartbeat=30")) as ws:
            pass
        # Refused after the handshake: an ERROR, then 4401.
        async with connect(ws_url(server, f"/v1/_watch?access_token={expired}")) as ws:
            assert (await recv(ws))["error"]["status"] == 401
            with pytest.raises(ConnectionClosed):
                await recv(ws)
        # Refused at the handshake itself (429): the identity's bucket holds two requests.
        for _ in range(2):
            async with connect(ws_url(server, f"/v1/notes?watch=true&access_token={flood}")):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, f"/v1/notes?watch=true&access_token={flood}")):
                pass
        assert refused.value.response.status_code == 429
    finally:
        server.stop()
    log = server.log_path.read_text()
    # The lines were written (so the check below looks at them), with the value taken out.
    handshakes = [line for line in log.splitlines() if '"WebSocket ' in line]
    assert len(handshakes) == 6, log
    assert sum("[accepted]" in line for line in handshakes) == 5
    assert sum(line.endswith(" 429") for line in handshakes) == 1
    # Each line quotes the URL as served (the credential taken out of the query by then) or,
    # where uvicorn wrote it first, with the credential redacted.
    assert all("access_token=" not in line or "access_token=[redacted]" in line for line in handshakes)
    assert "&heartbeat=30" in log  # the rest of the URL is kept
    for token in (good, expired, flood):
        assert token not in log
        assert token.rsplit(".", 1)[1] not in log  # nor its signature alone


def test_an_access_log_line_is_redacted_in_its_arguments() -> None:
    # uvicorn's access log formats the URL from the record's arguments, in its own formatter.
    redaction.install()
    logger = logging.getLogger("uvicorn.access")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    token = hs_token()
    try:
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/v1/notes?watch=true&access_token={token}&since=3",
            "1.1",
            200,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    line = out.getvalue()
    assert token not in line
    assert '"GET /v1/notes?watch=true&access_token=[redacted]&since=3 HTTP/1.1" 200' in line


def test_redact_leaves_other_text_alone() -> None:
    assert redaction.redact("/v1/notes?since=3") == "/v1/notes?since=3"
    assert redaction.redact("/v1/_watch?access_token=a.b.c") == "/v1/_watch?access_token=[redacted]"
    assert redaction.redact("?x=1&access_token=k%2Fy#f") == "?x=1&access_token=[redacted]#f"


def test_trace_logging_with_auth_is_warned_about(tmp_path: Path) -> None:
    # At trace, uvicorn logs whole scopes and messages, which no filter here takes apart.
    server = ServerProcess(tmp_path, auth="jwt", jwt_secret=SECRET, log_level="trace").start()
    server.stop()
    assert "log_level=trace logs every request and message whole" in server.log_path.read_text()
