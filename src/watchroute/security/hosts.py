"""The Host allow-list: the names this server answers to.

DNS rebinding turns a browser into a client of a local server: a page on evil.example has its
name re-resolved to 127.0.0.1, and from then on its requests (same origin as far as the browser
knows, `Origin` and `Host` agreeing) reach this server. They still say `Host: evil.example`.
So a request whose Host names none of the server's own names is refused before anything else:
by default the loopback names and the bound host, widened with `allowed_hosts` (a server behind
a proxy or reached by name), or switched off with `*`.

A Host is compared without its port and case-insensitively; the usual ones (the allowed names,
alone or with the server's port, in lower case) are found with one set lookup on the raw header.
A request without Host (HTTP/1.0) passes: browsers always send one.
"""

from __future__ import annotations

from typing import Any

from watchroute.core.problems import Problem

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The process is alive: a liveness probe reaches it by whatever address the orchestrator has,
# and the answer says nothing.
UNCHECKED_PATHS = frozenset({"/healthz"})


def host_name(host: str) -> str:
    """`host` without its port, in lower case: `[::1]:8000` -> `[::1]`, `Example:80` -> `example`."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host if end < 0 else host[: end + 1]
    return host.partition(":")[0]


class HostAllowList:
    """Whether a request's Host header names this server."""

    __slots__ = ("names", "raw")

    def __init__(self, settings: Any) -> None:
        extra = settings.allowed_host_list
        if "*" in extra:
            self.names: frozenset[str] | None = None
            self.raw: frozenset[bytes] = frozenset()
            return
        bound = str(getattr(settings, "host", "127.0.0.1")).strip().lower()
        if ":" in bound and not bound.startswith("["):
            bound = f"[{bound}]"  # an IPv6 address is bracketed in a Host header
        self.names = frozenset({*LOOPBACK_NAMES, bound, *(host_name(h) for h in extra)})
        port = getattr(settings, "port", 0)
        self.raw = frozenset(
            variant.encode("latin-1") for name in self.names for variant in (name, f"{name}:{port}")
        )

    def allows(self, host: bytes | None) -> bool:
        if host is None or host in self.raw or self.names is None:
            return True
        return host_name(host.decode("latin-1")) in self.names


def host_header(scope: Any) -> bytes | None:
    """The request's Host; servers put it first as a rule, so the loop ends at once."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value
    return None


def misdirected(host: bytes) -> Problem:
    shown = host.decode("latin-1")[:100]
    return Problem(
        421,
        "HostNotAllowed",
        f"this server does not answer to the host {shown!r}; "
        "reach it by one of its own names (allowed_hosts widens them)",
    )
