"""The doorbell: other instances' commits announced by NOTIFY, heard on a thread of its own.

Every writer rings `NOTIFY <schema>_commits, '<revision>'` after its commit (writer.py). Each
instance LISTENs on one dedicated connection and, when the revision rung is past what its writer
has read, asks the writer to read the log. A thread rather than a task of the event loop: the
loop under load is busy for a whole delivery at a time, and the writer (a thread too) reads the
log without it. The ring only says when to read: what is handed on is always read from the log,
so a ring lost (a dropped connection, a restart) costs the periodic tick's latency, never a
change.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import psycopg
from psycopg import sql

from watchroute.store.postgres.writer import CONNECT_SECONDS, Writer

log = logging.getLogger("watchroute")

RELISTEN_SECONDS = 1.0
# How long the listener waits for a ring before it looks whether it is asked to stop.
HEAR_SECONDS = 0.5


class Doorbell:
    def __init__(self, url: str, channel: str, writer: Writer) -> None:
        self.url = url
        self.channel = channel
        self.writer = writer
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchroute-doorbell", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does within HEAR_SECONDS (join it off the loop)."""
        self._stopping.set()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                with psycopg.Connection.connect(
                    self.url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    failing = False
                    self.writer.request_catch_up()  # what was rung while nobody listened
                    self._hear(conn)
            except (psycopg.Error, OSError) as exc:
                if not failing:  # once per outage
                    log.warning("listening for other instances' commits failed (%s); the tick goes on", exc)
                failing = True
            self._stopping.wait(RELISTEN_SECONDS)

    def _hear(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=HEAR_SECONDS):
                with contextlib.suppress(ValueError):
                    if self.writer.is_news(int(notify.payload)):
                        self.writer.request_catch_up()
