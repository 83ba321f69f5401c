"""Peers: the processes that share one SQLite file, and the wake-up each sends the others.

Several processes may write one database (`watchroute serve --workers N`, or separate instances
on one machine): SQLite serialises their transactions, and each reads the others' commits from
the log. What a process cannot see is *when* another has committed. After each commit, the
committing process sends every peer a datagram with its new revision; a peer that is behind
reads the log up to there. The datagram is only a wake-up: one that is lost (a full socket
buffer) delays a peer until the next one or its periodic check, and costs no event, since what
is delivered is always read from the log.

Each process binds a datagram socket in Linux's abstract namespace (no file to clean up: the
name goes with the process) and lists itself in the database's `peers` table, which is how the
others find it. Where there is no abstract namespace (not Linux), nobody is woken and each
process finds the others' commits on its periodic check alone. A name that refuses a datagram
belongs to a process that has gone; it is struck from the table by the next process to notice.
"""

from __future__ import annotations

import fcntl
import secrets
import socket
import sqlite3
import struct

PEERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (name BLOB PRIMARY KEY, pid INTEGER NOT NULL, since REAL NOT NULL);
"""

HELLO = b"H"  # a new peer: refresh the list
_REVISION = struct.Struct("!Q")


class WriterTurn:
    """Whose turn it is to write: an exclusive lock on a file beside the database, held from
    BEGIN IMMEDIATE to COMMIT.

    SQLite already lets one writer in at a time, but a process it turns away sleeps and tries
    again after growing sleeps: with two workers under a write load that made a write's p99
    several times what it is with this lock (docs/benchmarks.md, *Measurements behind the
    code*). A process waiting on the lock is woken the moment the other lets go.
    """

    def __init__(self, database_path: str) -> None:
        self._file = open(database_path + "-lock", "ab")  # noqa: SIM115 - held until close()

    def __enter__(self) -> None:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        self._file.close()


class Peers:
    """This process's wake-up socket and the names of the other processes on the same file."""

    def __init__(self) -> None:
        self.name = b"\0watchroute/" + secrets.token_hex(8).encode()
        self.socket: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.socket.bind(self.name)
        except OSError:
            self.socket.close()
            self.socket = None
        else:
            self.socket.setblocking(False)
        self.others: list[bytes] = []
        self.gone: set[bytes] = set()  # names that refused a datagram, to strike from the table

    def join(self, conn: sqlite3.Connection, pid: int, now: float) -> None:
        """List this process in the table (inside the caller's write transaction)."""
        conn.execute("INSERT OR REPLACE INTO peers VALUES (?, ?, ?)", (self.name, pid, now))

    def leave(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM peers WHERE name = ?", (self.name,))

    def refresh(self, conn: sqlite3.Connection) -> None:
        names = [name for (name,) in conn.execute("SELECT name FROM peers")]
        self.others = [name for name in names if name != self.name and name not in self.gone]

    def strike_gone(self, conn: sqlite3.Connection) -> None:
        """Remove the names of processes that have gone (inside a write transaction)."""
        if self.gone:
            conn.executemany("DELETE FROM peers WHERE name = ?", [(name,) for name in self.gone])
            self.gone.clear()

    def announce(self, revision: int | None) -> None:
        """Tell every peer that `revision` has committed (None: that this process has joined)."""
        if self.socket is None:
            return
        datagram = HELLO if revision is None else _REVISION.pack(revision)
        for name in self.others:
            try:
                self.socket.sendto(datagram, name)
            except (ConnectionRefusedError, FileNotFoundError):
                self.gone.add(name)
            except BlockingIOError:
                pass  # its buffer is full of wake-ups already
        if self.gone:
            self.others = [name for name in self.others if name not in self.gone]

    def receive(self) -> tuple[int, bool]:
        """Drain the socket: the highest revision announced (0 if none) and whether a peer joined."""
        highest, joined = 0, False
        while self.socket is not None:
            try:
                datagram = self.socket.recv(16)
            except (BlockingIOError, InterruptedError):
                return highest, joined
            if len(datagram) == _REVISION.size:
                highest = max(highest, _REVISION.unpack(datagram)[0])
            else:
                joined = True
        return highest, joined

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
