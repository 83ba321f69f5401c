"""The security group: authentication, rules, limits, browser safety and TLS (docs/security.md).

Limits default to off: a local development server should not surprise its one user;
docs/security.md gives production values. The limits on connections are the exception: they
keep the process itself alive.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, model_validator

# HS256 with a short secret can be brute-forced offline from one token (RFC 7518 3.2 asks for
# a key at least as long as the hash output).
MIN_SECRET_BYTES = 32


class SecuritySettings(BaseModel):
    # -- authentication ------------------------------------------------------------------------
    auth: Literal["none", "apikey", "jwt"] = Field("none", description="none, apikey or jwt")
    jwt_secret: str | None = Field(None, repr=False, description="HS256 secret")
    # RS256, ES256 or EdDSA by the key's type.
    jwt_public_key: str | None = Field(None, description="PEM file: RS256/ES256/EdDSA")
    # Keys fetched, cached and refreshed.
    jwks_url: str | None = Field(None, description="Where to fetch the token keys (JWKS)")
    jwt_issuer: str | None = Field(None, description="The iss a token must have")
    jwt_audience: str | None = Field(None, description="The aud a token must have")
    # Algorithms accepted at all; each key is only ever used with its own family's algorithm.
    jwt_algorithms: str = Field(
        "HS256,RS256,ES256,EdDSA", description="Token algorithms accepted, comma-separated"
    )
    jwt_leeway: float = Field(30.0, ge=0, le=300, description="Seconds of clock skew tolerated")
    jwks_cache_seconds: float = Field(300.0, gt=0, description="Seconds the token keys (JWKS) are cached")
    # EventSource cannot set headers: a token may also come in this cookie or ?access_token=.
    auth_cookie: str = Field("access_token", description="Cookie a token may come in")
    # An API key lookup is remembered this long: new requests and open watches see a revocation
    # within it (a `/v1/_watch` subscribe asks the store itself, and sees it at once).
    apikey_cache_seconds: float = Field(1.0, ge=0, description="Seconds an API key lookup is remembered")

    # -- authorization ---------------------------------------------------------------------------
    # Per-document rules: a JSON object {"collection-or-pattern": "filter with $claims"}, or
    # @FILE holding one. Example: {"notes": "owner=$sub"}.
    rules: str = Field("", description='JSON {"notes": "owner=$sub"} or @FILE')

    # -- limits ("N/s", "N/m", "N/h" or "N/10s": a bucket of N tokens refilled over the period)
    rate_limit_ip: str = Field("", description="Requests per client address, e.g. 100/s")
    rate_limit_identity: str = Field("", description="Requests per authenticated identity, e.g. 100/s")
    watch_rate_limit_ip: str = Field("", description="Watches opened per client address, e.g. 10/m")
    watch_rate_limit_identity: str = Field("", description="Watches opened per identity, e.g. 10/m")
    # Concurrent watches, on this instance or, with redis_url, on all together; 0: no cap.
    max_watches: int = Field(0, ge=0, description="Concurrent watches, 0 no cap")
    max_watches_per_identity: int = Field(0, ge=0, description="Concurrent watches per identity, 0 no cap")
    max_filter_length: int = Field(4096, ge=16, le=4096, description="Longest filter")
    max_filter_clauses: int = Field(64, ge=1, le=1024, description="Most clauses in a filter")
    # Seconds an idle keep-alive HTTP connection is kept open.
    idle_timeout: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection is kept open")

    # -- connections (server/connections.py): what sockets may hold before any credential is seen --------
    # Seconds a connection may take to send a whole request head, from its opening or from the
    # first byte of its next request; one that has not is closed.
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send a request head"
    )
    # Open connections from one client address, per server process; 0: no cap. Addresses in
    # forwarded_allow_ips (a proxy speaking for many) are not capped.
    max_connections_per_ip: int = Field(
        256, ge=0, description="Open connections per client address, 0 no cap"
    )
    # Open connections per server process; 0: as many as the file descriptor limit allows with
    # fd_reserve kept free. A lower value is taken as given; a higher one is lowered to that.
    max_connections: int = Field(
        0, ge=0, description="Open connections per process, 0 as many as descriptors allow"
    )
    # File descriptors no connection may take: the store's files, its new connections, logs.
    fd_reserve: int = Field(256, ge=32, description="File descriptors no connection may take")
    # redis://host:port/db: rate limits and watch caps are then shared by every instance using it.
    redis_url: str | None = Field(None, description="Rate limits and watch caps for all instances")
    redis_prefix: str = Field("watchroute:", description="Prefix of watchroute's Redis keys")

    # -- browsers --------------------------------------------------------------------------------
    # Origins allowed by CORS and for WebSocket upgrades, comma-separated (exact origins).
    cors_origins: str = Field("", description="Allowed origins, comma-separated")
    # Host names (the Host header, port aside) answered besides the loopback names and the bound
    # host, comma-separated; "*" answers any. A page on another name that resolves here (DNS
    # rebinding) is refused with 421.
    allowed_hosts: str = Field("", description="Host names answered besides loopback, comma-separated; * any")

    # -- proxies -----------------------------------------------------------------------------------
    # Addresses whose X-Forwarded-For and X-Forwarded-Proto are believed (comma-separated IPs or
    # networks, "*" for any); none by default, so a client cannot choose the address it is
    # counted and audited under.
    forwarded_allow_ips: str = Field("", description="Proxies whose X-Forwarded-For is believed")

    # -- TLS ---------------------------------------------------------------------------------------
    tls_cert: str | None = Field(None, description="PEM certificate")
    tls_key: str | None = Field(None, description="PEM private key")

    @model_validator(mode="after")
    def _consistent(self) -> SecuritySettings:
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key or self.jwks_url):
            raise ValueError("auth=jwt needs --jwt-secret, --jwt-public-key or --jwks-url")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"--jwt-secret must be at least {MIN_SECRET_BYTES} bytes for HS256")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for address in self.forwarded_allow_ip_list:
            if address != "*":
                try:
                    ipaddress.ip_network(address, strict=False)
                except ValueError:
                    raise ValueError(
                        f"--forwarded-allow-ips: {address[:60]!r} is not an address or network"
                    ) from None
        from watchroute.security.limits import parse_rate
        from watchroute.security.rules import Rules

        for name in (
            "rate_limit_ip",
            "rate_limit_identity",
            "watch_rate_limit_ip",
            "watch_rate_limit_identity",
        ):
            parse_rate(getattr(self, name))  # a malformed rate stops the server at start, not at load
        Rules.parse(self.rules, self.max_filter_length, self.max_filter_clauses)
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def forwarded_allow_ip_list(self) -> list[str]:
        return [a.strip() for a in self.forwarded_allow_ips.split(",") if a.strip()]
