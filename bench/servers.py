"""The servers a benchmark run measures, watchroute and its peers (bench/peers/), and starting
and stopping each in turn on a quiet machine.

watchroute is started by the launcher the tests use (tests/support/server.py); the peers by
their own commands, each in a session of its own so that a stop reaches its workers too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fanout

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.server import ServerProcess  # noqa: E402 - the checkout is on the path first

HOST = "127.0.0.1"
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


@dataclass
class Server:
    key: str
    label: str
    port: int
    sub_path: str = "/sub"
    pub_path: str = "/pub"
    cmd: list[str] = field(default_factory=list)
    cwd: Path | None = None
    health_path: str | None = None  # None: ready when the port accepts connections
    unavailable: str | None = None  # why it cannot run here
    prepare: Callable[[], None] | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    launcher: ServerProcess | None = None  # watchroute: started as the tests start it

    def target(self) -> fanout.Target:
        return fanout.Target(
            name=self.key,
            host=HOST,
            port=self.port,
            sub_path=self.sub_path,
            pub_path=self.pub_path,
            pid=self.proc.pid if self.proc else None,
        )


def _missing_modules(*names: str) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def watchroute_server(args, workdir: Path, key: str = "watchroute", workers: int = 1) -> Server:
    """watchroute on --watchroute-port, on a database of its own in workdir/<key>/."""
    folder = workdir / key
    launcher = ServerProcess(
        folder,
        port=args.watchroute_port,
        workers=workers,
        # every simulated client comes from this one address
        max_connections_per_ip=0,
        # what `watchroute serve` logs when run by hand: the figures are those of a default server
        log_level="info",
    )
    launcher.log_path = workdir / f"{key}.log"
    wr = Server(
        key=key,
        label="watchroute" if workers == 1 else f"watchroute, {workers} worker processes",
        port=args.watchroute_port,
        sub_path="/v1/bench?watch=true",
        pub_path="/v1/bench",
        health_path="/healthz",
        prepare=lambda: folder.mkdir(parents=True, exist_ok=True),
        launcher=launcher,
    )
    if _missing_modules("watchroute"):
        wr.unavailable = f"watchroute is not installed in {sys.prefix}"
    return wr


def servers(args, workdir: Path) -> list[Server]:
    peers = Path(args.peers_dir).resolve()
    py = sys.executable
    out: list[Server] = [watchroute_server(args, workdir)]
    if args.workers > 1:
        out.append(watchroute_server(args, workdir, key="watchroute-workers", workers=args.workers))

    raw = Server(
        key="raw",
        label="raw uvloop, encode once (peer)",
        port=9101,
        cmd=[py, str(peers / "raw_uvloop_limit.py"), "9101"],
        cwd=peers,
    )
    sse = Server(
        key="sse",
        label="FastAPI + sse-starlette + broadcaster (peer)",
        port=9102,
        cmd=[
            py,
            "-m",
            "uvicorn",
            "sse_starlette_broadcaster:app",
            "--app-dir",
            str(peers),
            "--port",
            "9102",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        cwd=peers,
    )
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    nchan = Server(
        key="nchan",
        label="nchan, nginx module in C (peer)",
        port=9103,
        cmd=[nginx or "nginx", "-c", str(peers / "nchan.conf")],
        cwd=peers,
        prepare=lambda: Path("/tmp/nchan").mkdir(parents=True, exist_ok=True),
    )
    if not (peers / "raw_uvloop_limit.py").exists():
        raw.unavailable = f"{peers}/raw_uvloop_limit.py not found"
    elif m := _missing_modules("uvloop"):
        raw.unavailable = f"missing Python package(s): {', '.join(m)}"
    if not (peers / "sse_starlette_broadcaster.py").exists():
        sse.unavailable = f"{peers}/sse_starlette_broadcaster.py not found"
    elif m := _missing_modules("fastapi", "uvicorn", "sse_starlette", "broadcaster", "httptools"):
        sse.unavailable = f"missing Python package(s): {', '.join(m)} (pip install into .venv)"
    if not (peers / "nchan.conf").exists():
        nchan.unavailable = f"{peers}/nchan.conf not found"
    elif not nginx:
        nchan.unavailable = "nginx not installed (apt-get install nginx-light libnginx-mod-nchan)"
    elif not NGINX_MODULE.exists():
        nchan.unavailable = f"{NGINX_MODULE} missing (apt-get install libnginx-mod-nchan)"
    out += [raw, sse, nchan]

    if args.only:
        keep = {k.strip() for k in args.only.split(",")}
        out = [s for s in out if s.key in keep]
    return out


# ---------------------------------------------------------------- process control


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def _ready(srv: Server) -> bool:
    if srv.health_path is None:
        return _port_busy(srv.port)
    try:
        url = f"http://{HOST}:{srv.port}{srv.health_path}"
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def log_tail(srv: Server, n: int = 3) -> str:
    try:
        lines = [x for x in srv.log.read_text(errors="replace").splitlines() if x.strip()]
        return " | ".join(lines[-n:])[-300:]
    except Exception:
        return ""


def start(srv: Server, workdir: Path, timeout: float = 30.0):
    if _port_busy(srv.port):
        raise RuntimeError(f"port {srv.port} already in use")
    if srv.prepare:
        srv.prepare()
    if srv.launcher is not None:
        srv.log = srv.launcher.log_path
        srv.launcher.start(timeout)
        srv.proc = srv.launcher.proc
        return
    srv.log = workdir / f"{srv.key}.log"
    with open(srv.log, "wb") as log:
        # own session, so that stop() can signal the server and its workers by process group id
        srv.proc = subprocess.Popen(
            srv.cmd,
            cwd=srv.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"exited with code {srv.proc.returncode}: {log_tail(srv)}")
        if _ready(srv):
            return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f}s: {log_tail(srv)}")


def stop(srv: Server):
    if srv.launcher is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # killed once the wait ran out
            srv.launcher.stop()
        return
    p = srv.proc
    if p is None or p.poll() is not None:
        return
    pgid = p.pid  # start_new_session: the group id is the server's own pid
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_quiet(limit: float, threshold: float = 0.25):
    """Wait (up to `limit` s) until other processes use less than `threshold` of a core.

    On a 2-core machine one busy neighbour takes the core the server or the generator needs.
    """
    deadline = time.monotonic() + limit
    while True:
        b0 = fanout.machine_busy()
        time.sleep(1.0)
        busy = fanout.machine_busy() - b0
        if busy < threshold or time.monotonic() >= deadline:
            break
        print(f"  machine busy ({busy:.2f} cores used by other processes), waiting", flush=True)
    if busy >= threshold:
        print(f"  measuring anyway: {busy:.2f} cores busy elsewhere", flush=True)
