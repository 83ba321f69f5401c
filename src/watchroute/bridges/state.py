"""A running bridge as the manager and its runner see it, and the status GET and /metrics show.

The status is kept by the instance that leads the bridge and stored beside its position
(`store.write([], position=("bridge-status:NAME", json))`, at most once a second and on every
change of state), so that any instance, or any worker of several on one SQLite file, answers
`GET /v1/_bridges` with the leader's figures.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from watchroute.bridges.config import BridgeConfig

# What a bridge is doing (docs/bridges.md, "Status").
STARTING = "starting"
RUNNING = "running"  # connected and following
PAUSED = "paused"  # the broker is down or refused: retried with capped backoff
FAILED = "failed"  # an error that is not the broker's (a bug, a bad configuration): retried slowly
STANDBY = "standby"  # another instance leads it
DELIVERIES_KEPT = 100  # webhook deliveries each bridge keeps for GET .../deliveries


def position_name(name: str) -> str:
    """The store position of bridge `name`: its broker position (in) or last accepted revision (out)."""
    return f"bridge:{name}"


def status_name(name: str) -> str:
    return f"bridge-status:{name}"


@dataclass(slots=True)
class BridgeState:
    """What a bridge has done since its runner started on this instance."""

    state: str = STARTING
    position: str | None = None
    error: str | None = None  # the last error, kept after recovery: `error_at` says when
    error_at: float | None = None
    since: float = field(default_factory=time.time)  # when `state` last changed
    published: int = 0  # out: changes the broker accepted
    received: int = 0  # in: messages read
    written: int = 0  # in: messages that became writes
    rejected: int = 0  # in: malformed messages skipped or dead-lettered
    errors: int = 0  # failures of the broker or of a delivery
    restarts_from_now: int = 0  # out: times the log's horizon passed the bridge's position
    deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DELIVERIES_KEPT))

    def to(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.since = time.time()

    def failed(self, error: str) -> None:
        self.errors += 1
        self.error = error
        self.error_at = time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "position": self.position,
            "error": self.error,
            "error_at": self.error_at,
            "published": self.published,
            "received": self.received,
            "written": self.written,
            "rejected": self.rejected,
            "errors": self.errors,
            "restarts_from_now": self.restarts_from_now,
        }

    def encode(self) -> str:
        return orjson.dumps({**self.to_dict(), "deliveries": list(self.deliveries)}).decode()


@dataclass(slots=True)
class Bridge:
    """One configured bridge on this instance; what the runners (in and out) are handed."""

    name: str
    config: BridgeConfig
    revision: int  # the revision of `_bridges/{name}` this configuration was set at
    since: int  # the revision the bridge was created at: a new OUT bridge publishes what follows
    state: BridgeState = field(default_factory=BridgeState)
    accepted: int = 0  # out: the last revision the broker accepted from this process
    # Run by the store on each inbound write's state (WriteOp.check): the collection's schema.
    check: Any = None

    @property
    def position_name(self) -> str:
        return position_name(self.name)
