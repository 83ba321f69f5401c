"""OUT to a webhook: each change POSTed as the watch event's JSON, signed, in revision order.

The receiver checks `Watchroute-Signature: sha256=HEX`, the HMAC-SHA256 under the bridge's
secret of `TIMESTAMP.BODY` where TIMESTAMP is the `Watchroute-Timestamp` header (seconds since
the epoch): signing the time with the body lets a receiver refuse an old delivery replayed
(docs/bridges.md has the recipe). Any answer but 2xx, a timeout or a refused connection is a
failed delivery: the bridge pauses and delivers the same change again with capped backoff,
so changes arrive in order (per resource, and overall); a change may arrive twice when its
answer was lost, with the same `Watchroute-Revision`. Each attempt is kept in a bounded
delivery log (GET /v1/_bridges/{name}/deliveries).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig, masked_url
from watchroute.bridges.state import DELIVERIES_KEPT

TIMEOUT_SECONDS = 10.0
# httpx logs each request with its URL at INFO: a webhook URL may carry a token.
logging.getLogger("httpx").setLevel(logging.WARNING)
SIGNATURE = "Watchroute-Signature"
TIMESTAMP = "Watchroute-Timestamp"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, name: str, config: BridgeConfig) -> None:
        self.url = config.url
        self.shown_url = masked_url(config.url)
        self._secret = config.secret.get_secret_value().encode() if config.secret is not None else None
        self.timeout = config.timeout or TIMEOUT_SECONDS
        # The runner hands in the bridge's own, which outlives a reconnect (manager.py).
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=DELIVERIES_KEPT)
        self._client: httpx.AsyncClient | None = None

    async def connect(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def last_accepted(self) -> int | None:
        return None  # the receiver's record is its own: the stored position decides

    async def publish(self, revision: int, event: bytes, headers: Mapping[str, str]) -> None:
        assert self._client is not None
        timestamp = str(int(time.time()))
        sent = {**headers, "Content-Type": "application/json", TIMESTAMP: timestamp}
        if self._secret is not None:
            sent[SIGNATURE] = signature(self._secret, timestamp, event)
        last = self.deliveries[-1] if self.deliveries else None
        attempt = last["attempt"] + 1 if last is not None and last["revision"] == revision else 1
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            answer = await self._client.post(self.url, content=event, headers=sent)
            status = answer.status_code
            if not answer.is_success:
                error = f"answered {status}"
        except httpx.TimeoutException:
            error = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.deliveries.append(
            {
                "revision": revision,
                "id": headers.get("Watchroute-Id"),
                "at": time.time(),
                "attempt": attempt,
                "status": status,
                "ms": round((time.monotonic() - started) * 1000, 1),
                "error": error,
            }
        )
        if error is not None:
            raise BridgeDown(f"webhook {self.shown_url}: {error}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
