"""A bridge's configuration: the body of PUT /v1/_bridges/{name} (docs/bridges.md).

The URL's scheme picks the broker (engines.py). An IN bridge turns each message of `topic` into
a write on `collection`, the id taken from where `id` says; an OUT bridge publishes every change
of `collection` (those `filter` concerns) to `subject` / `topic` / `stream`.

`secret` (webhooks) is stored apart from the rest (api/bridges.py): no GET, log line or event of
`_bridges` shows it, and `repr` of a configuration masks it.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from watchroute.core.filter import FilterError, compile_filter
from watchroute.core.names import COLLECTION_RE
from watchroute.core.problems import Problem

# The directions each scheme's broker has; the module of each is in engines.py.
SCHEMES: dict[str, tuple[str, ...]] = {
    "mqtt": ("in", "out"),
    "mqtts": ("in", "out"),
    "nats": ("in", "out"),
    "tls": ("in", "out"),  # NATS over TLS
    "amqp": ("in", "out"),
    "amqps": ("in", "out"),
    "redis": ("in", "out"),
    "rediss": ("in", "out"),
    "http": ("out",),
    "https": ("out",),
}
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Where an inbound message's id comes from: a topic segment (0-based), a header, a JSON field.
ID_RE = re.compile(r"topic:\d{1,3}|header:[A-Za-z0-9_.-]{1,128}|field:[A-Za-z0-9_.-]{1,256}")
# How a message is marked a delete: a header or JSON field being present (or equal to a value),
# or an empty body (MQTT's way of clearing a retained message).
DELETE_RE = re.compile(r"(header|field):[A-Za-z0-9_.-]{1,256}(=.{0,256})?|empty")


class BridgeConfig(BaseModel):
    """One bridge, as PUT and (without `secret`) as GET answers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Literal["in", "out"]
    url: str = Field(max_length=2048)
    collection: str
    # in: MQTT topic filter, NATS subject, RabbitMQ queue (or routing key), Redis stream key.
    # out: the MQTT topic (or RabbitMQ routing key) published to.
    topic: str | None = Field(default=None, max_length=1024)
    id: str | None = None  # in: "topic:N", "header:NAME" or "field:PATH"
    write: Literal["merge", "put"] = "merge"  # in: a merge patch, or the whole document
    delete: str | None = None  # in: "header:NAME[=VALUE]", "field:PATH[=VALUE]" or "empty"
    subject: str | None = Field(default=None, max_length=1024)  # out: NATS subject, RabbitMQ routing key
    stream: str | None = Field(default=None, max_length=256)  # out: Redis stream key, JetStream stream
    exchange: str | None = Field(default=None, max_length=256)  # RabbitMQ exchange ("": the default)
    filter: str | None = Field(default=None, max_length=4096)  # out: the watch filter language
    secret: SecretStr | None = Field(default=None, max_length=1024)  # webhooks: HMAC-SHA256 key
    # out: the seconds a delivery may take (a webhook's answer, a broker's acknowledgement).
    timeout: float | None = Field(default=None, gt=0, le=300)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def destination(self) -> str:
        """Where an OUT bridge publishes: its subject, topic or stream (the URL for a webhook)."""
        return self.subject or self.topic or self.stream or self.url

    @model_validator(mode="after")
    def _consistent(self) -> BridgeConfig:
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"url: scheme {scheme or '(none)'!r} is not one of {', '.join(SCHEMES)}")
        if not parts.hostname:
            raise ValueError("url: no host")
        if self.direction not in SCHEMES[scheme]:
            raise ValueError(f"url: {scheme}:// bridges go out only")
        if not COLLECTION_RE.fullmatch(self.collection):
            raise ValueError("collection: must match ^[a-z][a-z0-9_-]{0,62}$")
        if self.direction == "in":
            self._check_in()
        else:
            self._check_out(scheme)
        if self.secret is not None and scheme not in ("http", "https"):
            raise ValueError("secret: only webhooks (http://, https://) take a secret")
        return self

    def _check_in(self) -> None:
        for field in ("subject", "filter", "secret"):
            if getattr(self, field) is not None:
                raise ValueError(f"{field}: not for an in bridge")
        if not self.topic:
            raise ValueError("topic: an in bridge needs the topic, subject, queue or stream it reads")
        if self.id is None or not ID_RE.fullmatch(self.id):
            raise ValueError("id: needs 'topic:N', 'header:NAME' or 'field:PATH'")
        if self.delete is not None and not DELETE_RE.fullmatch(self.delete):
            raise ValueError("delete: needs 'header:NAME[=VALUE]', 'field:PATH[=VALUE]' or 'empty'")

    def _check_out(self, scheme: str) -> None:
        for field in ("id", "delete"):
            if getattr(self, field) is not None:
                raise ValueError(f"{field}: not for an out bridge")
        if self.write != "merge":
            raise ValueError("write: not for an out bridge")
        needed = {
            "nats": "subject",
            "tls": "subject",
            "redis": "stream",
            "rediss": "stream",
            "mqtt": "topic",
            "mqtts": "topic",
        }.get(scheme)
        if needed is not None and not getattr(self, needed):
            raise ValueError(f"{needed}: a {scheme}:// out bridge publishes to a {needed}")
        if scheme in ("amqp", "amqps") and not (self.subject or self.topic):
            raise ValueError("subject: a RabbitMQ out bridge needs the routing key (subject)")
        if self.filter is not None:
            try:
                compile_filter(self.filter)
            except FilterError as exc:
                raise ValueError(f"filter: {exc}") from None

    def public(self) -> dict[str, Any]:
        """What GET answers and `_bridges/{name}` stores: everything but the secrets (`secret`,
        and a password in the URL, shown as MASK)."""
        shown = self.model_dump(exclude={"secret"}, exclude_none=True)
        shown["url"] = masked_url(self.url)
        if self.secret is not None:
            shown["secret_set"] = True
        return shown

    def secrets(self) -> dict[str, str] | None:
        """What `_bridge_secrets/{name}` stores, None when there is nothing to keep apart."""
        kept: dict[str, str] = {}
        if self.secret is not None:
            kept["secret"] = self.secret.get_secret_value()
        if masked_url(self.url) != self.url:
            kept["url"] = self.url
        return kept or None


MASK = "***"


def masked_url(url: str) -> str:
    """`url` with its password (if any) replaced by MASK: for GET answers and log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def parse_config(body: Any) -> BridgeConfig:
    """A configuration from a request body; 422 problem details (each error) when it is not one."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "secret_set"}  # as GET answered it
    try:
        return BridgeConfig.model_validate(body)
    except ValidationError as exc:
        errors = [
            {
                "pointer": "/" + "/".join(str(p) for p in error["loc"]),
                "message": error["msg"].removeprefix("Value error, "),
            }
            for error in exc.errors(include_input=False, include_url=False)
        ]
        detail = "; ".join(
            (e["pointer"] + ": " if e["pointer"] != "/" else "") + e["message"] for e in errors
        )
        raise Problem(422, "BadBridge", f"not a bridge configuration: {detail}", errors=errors) from None


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise Problem(400, "BadName", f"bridge name {name[:80]!r} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$")
    return name
