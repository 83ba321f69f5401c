"""Open connections: what a socket may hold before it has said who it is.

Every connection costs a file descriptor from the moment it is accepted, long before a
credential is seen. Left alone, a thousand connections that send nothing (or drip a header byte
a second) took every descriptor of the process: `/healthz` failed, and the store could not open
a file to compact. So, per server process:

- a connection must send a whole request head within `header_timeout` seconds of its opening,
  and each later request on it within as long of its first byte, or it is closed (with 408 when
  nothing else is in flight on it); uvicorn only times an idle keep-alive connection;
- at most `max_connections_per_ip` connections are open from one client address, and at most
  `max_connections` in all, which is never more than the descriptor limit allows with
  `fd_reserve` kept free for the store's files and its new connections. A connection beyond a
  cap is closed as soon as it is accepted, before it costs a parser or a task (uvicorn's
  `limit_concurrency` would read its request and answer 503, and does not count the streams we
  take over);
- the descriptor soft limit is raised to the hard limit at start;
- each limit hit goes to the audit log (`connection_limited`): the first at once, the ones
  after it within a second in one line a second later saying how many (and the last address);
  `/metrics` counts every one.

A connection keeps its place for as long as its socket is open: through a WebSocket upgrade
and a watch stream taken over from the server (`transports/takeover.py`) too. This module
counts; uvicorn's HTTP protocol is made to ask it in `server/uvicorn.py` (on plain ASGI only
uvicorn's `limit_concurrency` caps the total). The caps cost a dict update when a connection
opens and closes, and the head's deadline a timer per request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import time
from typing import Any

from watchroute.security import audit

log = logging.getLogger("watchroute")

LOG_EVERY = 1.0  # seconds between two audit lines of one limit
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 37\r\nconnection: close\r\n\r\nthe request head took too long to come"
)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit where allowed; the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit is not settable
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: count nothing, the reserve then covers what is open
        return 0


class ConnectionLimits:
    """The connections open on this process, by client address, against the caps."""

    def __init__(self, settings: Any) -> None:
        self.header_timeout: float = settings.header_timeout
        self.per_address: int = settings.max_connections_per_ip
        self.asked_total: int = settings.max_connections
        self.reserve: int = settings.fd_reserve
        self.total = self._total(0)
        self.count = 0
        self.by_address: dict[str | None, int] = {}
        trusted = settings.forwarded_allow_ip_list
        # A proxy speaks for many clients: only the total holds for it.
        self.all_trusted = "*" in trusted
        self.trusted = [ipaddress.ip_network(a, strict=False) for a in trusted if a != "*"]
        self._uncapped: dict[str | None, bool] = {}
        self._refused: dict[str, list[Any]] = {}  # hits not written yet: [how many, last address]
        self._logged_at: dict[str, float] = {}

    def _total(self, in_use: int) -> int:
        room = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - self.reserve - in_use)
        return min(self.asked_total, room) if self.asked_total else room

    def measure(self) -> None:
        """Count what the process holds once started (store, listening sockets, logs) out of
        the room connections may take."""
        self.total = self._total(open_fds() - self.count)
        if self.asked_total and self.total < self.asked_total:
            log.warning(
                "max_connections lowered to %d: the file descriptor limit leaves no more room", self.total
            )

    def admit(self, address: str | None) -> str | None:
        """Take a place for a new connection from `address`; None, or the limit it would pass."""
        if self.count >= self.total:
            return "max_connections"
        held = self.by_address.get(address, 0)
        if self.per_address and held >= self.per_address and not self._is_uncapped(address):
            return "max_connections_per_ip"
        self.by_address[address] = held + 1
        self.count += 1
        return None

    def release(self, address: str | None) -> None:
        self.count -= 1
        held = self.by_address[address] - 1
        if held:
            self.by_address[address] = held
        else:
            del self.by_address[address]

    def _is_uncapped(self, address: str | None) -> bool:
        if self.all_trusted:
            return True
        if not self.trusted or address is None:
            return False
        found = self._uncapped.get(address)
        if found is None:
            try:
                ip = ipaddress.ip_address(address)
                found = any(ip in network for network in self.trusted)
            except ValueError:
                found = False
            if len(self._uncapped) < 4096:
                self._uncapped[address] = found
        return found

    def hit(self, limit: str, address: str | None) -> None:
        """Count a limit hit for /metrics, and have it written to the audit log: at once, or
        with the others of its limit a second after the last line."""
        audit.counts[audit.CONNECTION_LIMITED] += 1
        held = self._refused.get(limit)
        if held is not None:  # a line is due: this hit goes in it
            held[0] += 1
            held[1] = address
            return
        self._refused[limit] = [1, address]
        due = self._logged_at.get(limit, -LOG_EVERY) + LOG_EVERY - time.monotonic()
        if due <= 0:
            self._write(limit)
        else:
            asyncio.get_running_loop().call_later(due, self._write, limit)

    def _write(self, limit: str) -> None:
        times, address = self._refused.pop(limit)
        self._logged_at[limit] = time.monotonic()
        audit.record(audit.CONNECTION_LIMITED, limit, address=address, times=times, open=self.count)
        audit.counts[audit.CONNECTION_LIMITED] -= 1  # record() counts its line; hit() counted each hit


class Slot:
    """One connection's place under the caps, given back once, by whichever protocol holds
    the socket when it closes."""

    __slots__ = ("address", "limits")

    def __init__(self, limits: ConnectionLimits | None, address: str | None) -> None:
        self.limits = limits
        self.address = address

    def release(self) -> None:
        limits, self.limits = self.limits, None
        if limits is not None:
            limits.release(self.address)
