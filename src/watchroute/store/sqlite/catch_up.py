"""Other processes on the same file: their commits, handed on by this one in revision order.

The revision is read inside each write transaction, which SQLite serialises across processes,
so revisions stay one gap-free sequence. Each process reads the others' commits from the log,
woken by a datagram after each of their commits (store/peers.py) and, in case one was lost,
every `PEER_CHECK_SECONDS` on its own. The reading itself is a job of the writer thread, between
write groups (writer.py), so that what it hands on is in order with its own commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from watchroute.core.change import Change
from watchroute.store.peers import Peers
from watchroute.store.sqlite.log_reads import log_after
from watchroute.store.sqlite.schema import read_meta

CATCH_UP_CHUNK = 4096  # other processes' changes read per pass
# How often a process looks for commits of others on its own, in case a wake-up was lost.
PEER_CHECK_SECONDS = 1.0


class PeerFollower:
    """Asks the writer for a catch-up (`request`) when a peer says it committed past what this
    process has handed on (`revision`), or when the peers may have changed."""

    def __init__(self, peers: Peers, request: Callable[[], None], revision: Callable[[], int]) -> None:
        self.peers = peers
        self._request = request
        self._revision = revision
        # Set on the loop, cleared by the writer thread before it reads the list of peers: a
        # change after that is either seen by that read or sets it again.
        self._changed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.peers.socket is not None:
            loop.add_reader(self.peers.socket, self._woken)
        self._check_peers()

    def stop(self) -> None:
        if self._check is not None:
            self._check.cancel()
        if self.peers.socket is not None and self._loop is not None:
            self._loop.remove_reader(self.peers.socket)

    def _woken(self) -> None:
        """A peer's datagrams: catch up with its commits, or look at who is there now."""
        revision, joined = self.peers.receive()
        if joined:
            self._changed = True
        if joined or revision > self._revision():
            self._request()

    def _check_peers(self) -> None:
        self._changed = True
        self._request()
        assert self._loop is not None
        self._check = self._loop.call_later(PEER_CHECK_SECONDS, self._check_peers)

    def read(self, conn: sqlite3.Connection, seen: int) -> tuple[list[Change], int, int]:
        """On the writer thread: what others committed after `seen` (at most CATCH_UP_CHUNK
        changes), the latest revision committed and the compacted one."""
        conn.execute("BEGIN")
        try:
            if self._changed:
                self._changed = False
                self.peers.refresh(conn)
            latest, compacted = read_meta(conn)
            others = log_after(conn, seen, min(latest, seen + CATCH_UP_CHUNK)) if latest > seen else []
        finally:
            conn.execute("COMMIT")
        return others, latest, compacted
