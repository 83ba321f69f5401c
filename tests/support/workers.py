"""A `--workers N` server's processes, seen from outside: its workers and their connections."""

from __future__ import annotations

import psutil


def worker_pids(server_pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(server_pid).children()]


def connections_by_worker(server_pid: int, port: int) -> dict[int, int]:
    """Established connections to the server's port, per worker."""
    return {
        pid: sum(
            1
            for conn in psutil.Process(pid).net_connections(kind="tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        )
        for pid in worker_pids(server_pid)
    }
