"""Several worker processes on one port (`watchroute serve --workers N`).

One Python process uses one core for its event loop. With `workers` > 1 the parent binds N
listening sockets to the same address with SO_REUSEPORT, so that the kernel spreads incoming
connections evenly over them (one shared socket would wake every worker for each connection and
hand most of them to whichever is idle first), and forks one server per socket. The workers
share the SQLite file: each writes with group commit and delivers every commit, its own and the
others' (store/peers.py), to the watchers connected to it.

The parent only supervises: a worker that dies is started again on the same socket, whose
queued connections then wait for it instead of being refused; SIGTERM or SIGINT is passed on to
every worker, and the parent exits when they have.

A worker never outlives the parent: orphaned workers of a parent killed with -9 would go on
serving the port with the settings they were started with, and with SO_REUSEPORT they would
share it with the next server started there (another --auth, say). Each worker asks Linux for
SIGTERM when its parent dies (PR_SET_PDEATHSIG) and, everywhere, watches a pipe whose only
writing end the parent holds: the kernel closes it when the parent dies, however it died.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("watchroute")

# A worker that exits with an error within this many seconds of its start failed to start.
# After START_ATTEMPTS such failures in a row on one socket the server stops: the cause is not
# passing (a bad database path, a port setting). One killed by a signal is simply started again.
STARTUP_SECONDS = 3.0
START_ATTEMPTS = 3
RESTART_DELAY = 0.5


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` sockets bound to the same address; port 0 picks one port for them all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, parent_alive: int) -> None:
    """In a worker: SIGTERM to this process when `parent` dies (a graceful stop, as when the
    parent passes its own SIGTERM on). `parent_alive` is the reading end of a pipe whose writing
    end only the parent holds."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    threading.Thread(target=_stop_at_eof, args=(parent_alive,), name="watchroute-parent", daemon=True).start()
    if os.getppid() != parent:  # it died before either was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_at_eof(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 1):  # the parent never writes: this returns at its death
            pass
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(
        self,
        sockets: list[socket.socket],
        run_worker: Callable[[socket.socket, int], None],
        worker_gone: Callable[[int], None] = lambda index: None,
    ) -> None:
        self.sockets = sockets
        self.run_worker = run_worker
        self.worker_gone = worker_gone  # told the socket index of a worker that has exited
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (socket index, started at)
        self.failed_starts = [0] * len(sockets)  # in a row, per socket
        self.stopping = False
        # Only this process keeps the writing end: each worker closes its copy at once.
        self.alive_read, self.alive_write = os.pipe()

    def run(self) -> int:
        """Start the workers and keep them running until a signal; the exit status."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(len(self.sockets)):
            self._start(index)
        status = 0
        while self.workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index, started = self.workers.pop(pid)
            self.worker_gone(index)
            code = os.waitstatus_to_exitcode(wait_status)
            if self.stopping:
                continue
            starting = code > 0 and time.monotonic() - started < STARTUP_SECONDS
            self.failed_starts[index] = self.failed_starts[index] + 1 if starting else 0
            if self.failed_starts[index] >= START_ATTEMPTS:
                log.error("worker %d failed to start %d times; stopping the server", pid, START_ATTEMPTS)
                status = 1
                self._stop(signal.SIGTERM, None)
                continue
            log.warning("worker %d exited with %d; starting another", pid, code)
            time.sleep(RESTART_DELAY)
            self._start(index)
        return status

    def _start(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            self.workers = {}  # its siblings are not its to signal
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(self.alive_write)
            die_with_parent(parent, self.alive_read)
            for other, sock in enumerate(self.sockets):
                if other != index:
                    sock.close()
            code = 1
            try:
                self.run_worker(self.sockets[index], index)
                code = 0
            except BaseException:
                log.exception("worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = (index, time.monotonic())

    def _stop(self, sig: int, frame: object) -> None:
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
