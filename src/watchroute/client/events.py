"""What the client hands back: resources, list pages, batch results and watch events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
# Client-side only: the events up to the next BOOKMARK with `initial_events_end` are the whole
# current state again (a relist after 410, or an initial listing that was cut and restarted).
# Whoever keeps state should replace it with that listing rather than add to it.
RESYNC = "RESYNC"
CHANGE_TYPES = (ADDED, MODIFIED, DELETED)


@dataclass(frozen=True, slots=True)
class Resource:
    id: str
    revision: int  # the revision of its last change
    created_revision: int
    # None only in a write's answer to a credential that may write the collection but not read it.
    data: dict[str, Any] | None
    # When its lease lapses (a write with `ttl`); None: permanent.
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Resource:
        expires_at = raw.get("expires_at")
        return cls(
            raw["id"],
            raw["revision"],
            raw["created_revision"],
            raw.get("data"),
            None if expires_at is None else datetime.fromisoformat(expires_at),
        )

    def to_json(self) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "id": self.id,
            "revision": self.revision,
            "created_revision": self.created_revision,
            "data": self.data,
        }
        if self.expires_at is not None:
            resource["expires_at"] = self.expires_at.isoformat().replace("+00:00", "Z")
        return resource


@dataclass(frozen=True, slots=True)
class ResourceList:
    items: list[Resource]
    revision: int  # watching with since=revision misses nothing
    continue_: str | None = None  # the token of the next page; None on the last one

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [r.to_json() for r in self.items],
            "revision": self.revision,
            "continue": self.continue_,
        }


@dataclass(frozen=True, slots=True)
class BatchResult:
    revision: int
    results: list[Resource]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch. `revision` is the change's revision (for ADDED/MODIFIED/DELETED),
    the watch's resume point (BOOKMARK), or None (RESYNC)."""

    type: str
    revision: int | None
    object: Resource | None = None
    # Part of an initial listing (initial=True, or a relist): the current state, not a change.
    initial: bool = False
    # The BOOKMARK that ends an initial listing.
    initial_events_end: bool = False
    # format="patch": the merge patch the server sent for this MODIFIED (`object` has it applied);
    # None when the server sent the whole object.
    patch: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def expired(self) -> bool:
        """A DELETED made by the lapse of the resource's lease, not by a client."""
        return self.raw.get("expired") is True

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": self.type, "revision": self.revision}
        if self.object is not None:
            event["object"] = self.object.to_json()
        if self.patch is not None:
            event["patch"] = self.patch
        if self.initial_events_end:
            event["initial_events_end"] = True
        if self.expired:
            event["expired"] = True
        return event
