"""The replication slot's health (its lag, whether PostgreSQL invalidated it) and its removal.

A slot keeps every WAL segment from its confirmed position on: one that nobody reads fills the
disk unless `max_slot_wal_keep_size` bounds it, and then PostgreSQL invalidates it (wal_status
`lost`). Each instance reads the slot's state every HEALTH_SECONDS for `/readyz` and `/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

HEALTH_SECONDS = 2.0

_HEALTH = (
    "SELECT active, wal_status, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
    "FROM pg_replication_slots WHERE slot_name = %s"
)


@dataclass(slots=True)
class Health:
    exists: bool = False
    active: bool = False
    wal_status: str = ""  # reserved, extended, unreserved, lost
    lag_bytes: int = 0  # WAL kept for the slot past what it has confirmed

    def as_dict(self) -> dict[str, Any]:
        return {
            "exists": self.exists,
            "active": self.active,
            "wal_status": self.wal_status,
            "lag_bytes": self.lag_bytes,
        }


async def health(conn: psycopg.AsyncConnection[Any], slot: str) -> Health:
    cur = await conn.execute(_HEALTH, (slot,))
    row = await cur.fetchone()
    if row is None:
        return Health()
    active, wal_status, lag = row
    return Health(True, active, wal_status or "", lag or 0)


def drop(url: str, slot: str, schema: str) -> list[str]:
    """Remove the slot and the publication, and forget the applied position so that the next
    capture copies the tables again; what was removed. Refuses while an instance streams."""
    done: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is not None:
            if row[0]:
                raise RuntimeError(f"the slot {slot} is in use: stop the capturing servers first")
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            done.append(f"replication slot {slot}")
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,)).fetchone():
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(slot)))
            done.append(f"publication {slot}")
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.positions",)).fetchone()[0]:  # type: ignore[index]
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE name = 'capture'").format(sql.Identifier(schema, "positions"))
            )
    return done
