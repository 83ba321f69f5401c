"""Fan-out benchmark: watchroute side by side with its peers, in one run; then watch versus polling.

Starts each server in turn (watchroute from .venv, and the peers in bench/peers/), runs the
scenarios of bench/fanout.py against it, stops it, and prints a Markdown table. Then, on a
fresh watchroute (the peers have no lists), bench/polling.py: clients kept fresh by polling
versus by watching, at a low and a high change rate (--skip-polling leaves it out). With
--write-docs it also writes the tables and a description of the machine to docs/benchmarks.md.
See bench/README.md for what each figure means.

    .venv/bin/python bench/run.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout
import filtered
import leases
import polling
import postgres
import writes

REPO = Path(__file__).resolve().parent.parent
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

    def target(self) -> fanout.Target:
        return fanout.Target(
            name=self.key,
            host=HOST,
            port=self.port,
            sub_path=self.sub_path,
            pub_path=self.pub_path,
            pid=self.proc.pid if self.proc else None,
        )


# The section of docs/benchmarks.md that a run leaves as it is.
KEPT_SECTION = "## Measurements behind the code"


def _missing_modules(*names: str) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def watchroute_server(args, workdir: Path, key: str = "watchroute", workers: int = 1) -> Server:
    """watchroute on --watchroute-port, on a database of its own in workdir/<key>/."""
    exe = REPO / ".venv" / "bin" / "watchroute"
    db = workdir / key / "bench.db"
    wr = Server(
        key=key,
        label="watchroute" if workers == 1 else f"watchroute, {workers} worker processes",
        port=args.watchroute_port,
        sub_path="/v1/bench?watch=true",
        pub_path="/v1/bench",
        # an absolute path after "sqlite:///", i.e. four slashes, as SQLAlchemy URLs spell it
        cmd=[
            str(exe),
            "serve",
            "--port",
            str(args.watchroute_port),
            "--database",
            f"sqlite:///{db}",
            "--workers",
            str(workers),
            # every simulated client comes from this one address
            "--max-connections-per-ip",
            "0",
        ],
        cwd=db.parent,
        health_path="/healthz",
        prepare=lambda: db.parent.mkdir(parents=True, exist_ok=True),
    )
    if not exe.exists():
        wr.unavailable = f"no `watchroute` console script in {exe.parent}"
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


def _log_tail(srv: Server, n: int = 3) -> str:
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
            raise RuntimeError(f"exited with code {srv.proc.returncode}: {_log_tail(srv)}")
        if _ready(srv):
            return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f}s: {_log_tail(srv)}")


def stop(srv: Server):
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


# ---------------------------------------------------------------- scenarios


async def measure(srv: Server, args) -> dict:
    t = srv.target()
    res: dict = {}
    try:
        await fanout.warmup(t)
    except Exception as e:
        res["error"] = f"warm-up failed: {e!r}"[:300]
        return res
    # Idle first: memory an allocator took for the burst is seldom given back, and would hide
    # the cost of the streams.
    scenarios = [
        ("idle", lambda: fanout.run_idle(t, args.idle_streams)),
        (
            "burst",
            lambda: fanout.run_burst(t, args.subscribers, args.events, args.burst_timeout, args.record_every),
        ),
        (
            "steady",
            lambda: fanout.run_steady(
                t,
                args.steady_subscribers,
                args.steady_rate,
                args.steady_seconds,
                record_every=args.record_every,
            ),
        ),
    ]
    for name, run in scenarios:
        if srv.proc.poll() is not None:
            res[name] = {"error": f"server exited ({srv.proc.returncode}): {_log_tail(srv)}"}
            continue
        t0 = time.monotonic()
        try:
            res[name] = await run()
        except Exception as e:
            res[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        res[name]["wall_s"] = time.monotonic() - t0
        print(f"  {name}: {_brief(res[name])}", flush=True)
    return res


def _brief(r: dict) -> str:
    keys = (
        "error",
        "deliveries_per_s",
        "cpu_us_per_delivery",
        "p50_ms",
        "p99_ms",
        "rss_per_stream_kb",
        "delivered",
        "expected",
        "generator_cpu_util",
        "wall_s",
    )
    return fanout.brief(r, keys)


# ---------------------------------------------------------------- report


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


def _cells(r: dict) -> list[str]:
    if "error" in r:
        return [f"error: {r['error']}", "", "", "", ""]
    b, i, s = r.get("burst", {}), r.get("idle", {}), r.get("steady", {})
    cells = []
    if "error" in b:
        cells += [f"error: {b['error']}", "", ""]
    else:
        short = (
            ""
            if b["delivered"] >= b["expected"]
            else (f" (timed out: {b['delivered'] / b['expected']:.0%} delivered)")
        )
        cells += [
            _num(b["deliveries_per_s"]) + short,
            f"{b['cpu_us_per_delivery']:.1f} us",
            f"{_ms(b['p50_ms'])} / {_ms(b['p99_ms'])} ms",
        ]
    cells.append(f"error: {i['error']}" if "error" in i else f"{i['rss_per_stream_kb']:.1f} KB")
    if "error" in s:
        cells.append(f"error: {s['error']}")
    else:
        note = ""
        if s["delivered"] < s["expected"]:
            note = f" (fell behind: {s['delivered'] / s['expected']:.0%} delivered)"
        elif s["achieved_rate"] < 0.95 * s["rate"]:
            unsent = f"; {s['sent']:,} of {s['planned']:,} sent" if s["sent"] < s["planned"] else ""
            note = f" (only {s['achieved_rate']:.0f} writes/s{unsent})"
        cells.append(f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} ms{note}")
    return cells


def table(rows: list[tuple[Server, dict | None]], args) -> str:
    head = [
        "server",
        "deliveries/s",
        "server CPU per delivery",
        "latency p50 / p99 (burst)",
        "idle RSS per open SSE stream",
        f"latency p50 / p99 (steady, {args.steady_rate:g} writes/s x {args.steady_subscribers} streams)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for srv, r in rows:
        cells = [f"not available: {srv.unavailable}", "", "", "", ""] if r is None else _cells(r)
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
        lines.append("| " + " | ".join([srv.label, *cells]) + " |")
    return "\n".join(lines)


def details(rows: list[tuple[Server, dict | None]]) -> str:
    head = [
        "server",
        "burst: delivered / expected",
        "burst: seconds",
        "burst: publishes/s",
        "burst: server CPU busy",
        "burst: generator CPU busy",
        "burst: other CPU busy",
        "idle: RSS before → with streams",
        "steady: writes/s achieved",
        "steady: server / generator CPU busy",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for srv, r in rows:
        if not r or "error" in r:
            continue
        b, i, s = r.get("burst", {}), r.get("idle", {}), r.get("steady", {})
        c = [srv.label]
        if "error" in b:
            c += ["-"] * 6
        else:
            c += [
                f"{b['delivered']:,} / {b['expected']:,}",
                f"{b['seconds']:.1f}",
                f"{b['publishes_per_s']:.0f}",
                f"{b['server_cpu_util']:.0%}",
                f"{b['generator_cpu_util']:.0%}",
                f"{b['other_cpu_util']:.0%}",
            ]
        c.append(
            "-"
            if "error" in i
            else f"{i['rss_before_mb']:.1f} → {i['rss_open_mb']:.1f} MB ({i['idle_streams']:,} streams)"
        )
        c.append("-" if "error" in s else f"{s['achieved_rate']:.0f} of {s['rate']:g}")
        c.append(
            "-"
            if "error" in s
            else f"{s['server_cpu_util']:.0%} / {s.get('generator_cpu_util', float('nan')):.0%}"
        )
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


def warnings(rows) -> list[str]:
    out = []
    for srv, r in rows:
        b = (r or {}).get("burst", {})
        if b.get("generator_cpu_util", 0) > 0.85:
            out.append(
                f"{srv.label}: the load generator was {b['generator_cpu_util']:.0%} busy during "
                "the burst, so its deliveries/s may be capped by the generator; CPU per delivery "
                "is the server's own and still holds."
            )
        st = (r or {}).get("steady", {})
        if st.get("generator_cpu_util", 0) > 0.85:
            out.append(
                f"{srv.label}: the load generator was {st['generator_cpu_util']:.0%} busy during the "
                "steady run, so its reads may have added to the steady latency."
            )
        if b.get("other_cpu_util", 0) > 0.25:
            out.append(
                f"{srv.label}: other processes kept {b['other_cpu_util']:.0%} of a core busy "
                "during the burst; on 2 cores that skews every figure of this row: run again "
                "on a quiet machine."
            )
    return out


def speed_check() -> dict:
    """How fast this machine is right now: ns per system call (getppid) and per iteration of a
    plain Python loop, best of 3. A shared VM varies from day to day, and both show it."""

    def syscall(n: int = 200_000) -> float:
        t = time.perf_counter_ns()
        for _ in range(n):
            os.getppid()
        return (time.perf_counter_ns() - t) / n

    def python_loop(n: int = 1_000_000) -> float:
        t, total = time.perf_counter_ns(), 0
        for i in range(n):
            total += i
        return (time.perf_counter_ns() - t) / n

    return {"syscall_ns": min(syscall() for _ in range(3)), "loop_ns": min(python_loop() for _ in range(3))}


def machine(speed: dict) -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "\n".join(
        [
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- cores (nproc): {os.cpu_count()}",
            f"- CPU: {model}",
            f"- memory: {mem}",
            f"- kernel: {platform.system()} {platform.release()}",
            f"- Python: {platform.python_version()} ({platform.python_implementation()})",
            f"- speed at the start of the run: {speed['syscall_ns']:.0f} ns per system call "
            f"(`getppid`), {speed['loop_ns']:.0f} ns per iteration of a plain Python loop; both "
            "vary from day to day on a shared VM, so compare runs only where they are close",
            "- load generator: bench/fanout.py (and bench/polling.py) on the same machine, one "
            "process (uvloop)",
        ]
    )


def idle_section(rows, args, ws: dict) -> str:
    """watchroute's idle SSE figure (from the fan-out run) beside its idle WebSocket figure."""
    sse = next((r.get("idle", {}) for srv, r in rows if srv.key == "watchroute" and r), {})
    lines = [
        "### Idle watchers: SSE and WebSocket (watchroute)",
        "",
        "Each on a fresh watchroute, warmed up first: (RSS with K idle watchers open - RSS before) / K. "
        "SSE: the idle column above (`GET /v1/bench?watch=true`). WebSocket: `bench/idle_rss.py`, "
        "one upgraded watch URL per watcher (`ws://.../v1/idle?heartbeat=300`), and one write then "
        "proves every watcher is live.",
        "",
        "| watchers | K | RSS before → with K open | per watcher |",
        "|---|---|---|---|",
    ]
    if "rss_per_stream_kb" in sse:
        lines.append(
            f"| SSE | {sse['idle_streams']:,} | {sse['rss_before_mb']:.1f} → {sse['rss_open_mb']:.1f} MB | "
            f"{sse['rss_per_stream_kb']:.1f} KB |"
        )
    elif sse:
        lines.append(f"| SSE | | error: {sse.get('error', '')} | |")
    if "kb_per_watcher" in ws:
        lines.append(
            f"| WebSocket | {ws['watchers']:,} | {ws['rss_before_mb']:.1f} → {ws['rss_open_mb']:.1f} MB | "
            f"{ws['kb_per_watcher']:.1f} KB |"
        )
    else:
        lines.append(f"| WebSocket | {args.ws_idle:,} | error: {ws.get('error', '')} | |")
    return "\n".join(lines)


def goals(rows, args, ws: dict | None, filt: dict | None, wrote: dict | None = None) -> str:
    """watchroute's figures of this run against the goals it is built to."""
    r = next((r for srv, r in rows if srv.key == "watchroute" and r and "error" not in r), None) or {}
    b, i, st = r.get("burst", {}), r.get("idle", {}), r.get("steady", {})
    out = []

    def line(goal: str, have: str | None, ok: bool | None, where: str):
        mark = "-" if ok is None else ("met" if ok else "**not met**")
        out.append(f"| {goal} | {have or 'not measured'} | {mark} | {where} |")

    if "deliveries_per_s" in b:
        line(
            ">= 150,000 deliveries/s (burst)",
            f"{_num(b['deliveries_per_s'])} ({b['subscribers']:,} streams)",
            b["deliveries_per_s"] >= 150_000 and b["delivered"] >= b["expected"],
            "Fan-out",
        )
        line(
            "<= 5 us server CPU per delivery (burst)",
            f"{b['cpu_us_per_delivery']:.1f} us",
            b["cpu_us_per_delivery"] <= 5.0,
            "Fan-out",
        )
    else:
        line(">= 150,000 deliveries/s, <= 5 us per delivery (burst)", None, None, "Fan-out")
    if "p99_ms" in st:
        at = f"{st['rate']:g} writes/s x {st['subscribers']:,} streams"
        met = st["p99_ms"] <= 10.0 and st["delivered"] >= st["expected"]
        line(
            "p99 <= 10 ms at 200 writes/s x 1,000 watchers", f"{_ms(st['p99_ms'])} ms ({at})", met, "Fan-out"
        )
    else:
        line("p99 <= 10 ms at 200 writes/s x 1,000 watchers", None, None, "Fan-out")
    if "rss_per_stream_kb" in i:
        line(
            "<= 8 KB RSS per idle SSE watcher (10,000 open)",
            f"{i['rss_per_stream_kb']:.1f} KB ({i['idle_streams']:,} open)",
            i["rss_per_stream_kb"] <= 8.0,
            "Fan-out, idle",
        )
    else:
        line("<= 8 KB RSS per idle SSE watcher (10,000 open)", None, None, "Fan-out, idle")
    if ws and "kb_per_watcher" in ws:
        line(
            "idle WebSocket watcher (stated)",
            f"{ws['kb_per_watcher']:.1f} KB ({ws['watchers']:,} open)",
            None,
            "Idle watchers",
        )
    q = filtered.ratio(filt) if filt else None
    if q is not None:
        f, u = filt["filtered"], filt["unfiltered"]
        line(
            "1,000 equality filters <= 1.5x unfiltered, per delivered event",
            f"{q:.2f}x ({f['us_per_delivery']:.1f} vs {u['us_per_delivery']:.1f} us)",
            q <= 1.5 and filtered.verified(filt),
            "Filtered versus unfiltered",
        )
        q1 = filtered.ratio(filt, "single")
        if q1 is not None:
            line(
                "the same, against one unfiltered watcher (one delivery per write in both)",
                f"{q1:.2f}x ({f['us_per_delivery']:.1f} vs {filt['single']['us_per_delivery']:.1f} us)",
                None,
                "Filtered versus unfiltered",
            )
        q2 = filtered.ratio(filt, of="batched")
        if q2 is not None:
            line(
                "the same, every write a batch of all documents (1,000 deliveries per commit in both)",
                f"{q2:.2f}x ({filt['batched']['us_per_delivery']:.1f} vs {u['us_per_delivery']:.1f} us)",
                None,
                "Filtered versus unfiltered",
            )
    else:
        line("1,000 equality filters <= 1.5x unfiltered, per delivered event", None, None, "Filtered")
    wrote = wrote or {}
    for key, goal, want in (
        ("put", ">= 20,000 single-resource writes/s (REST, SQLite, group commit)", 20_000),
        ("batch", ">= 100,000 writes/s through `_batch`", 100_000),
    ):
        r = wrote.get(key, {})
        if "writes_per_s" in r:
            failed = r.get("non_2xx") or r.get("failed")
            line(goal, f"{r['writes_per_s']:,}", r["writes_per_s"] >= want and not failed, "Writes")
        else:
            line(goal, None, None, "Writes")
    head = ["goal", "this run", "", "section"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *out])


def report(
    rows,
    args,
    argv: list[str],
    polls: list[dict] | None = None,
    polls_note: str | None = None,
    ws: dict | None = None,
    filt: dict | None = None,
    wrote: dict | None = None,
    pg: dict | None = None,
):
    sizes = (
        f"burst: {args.subscribers:,} streams x {args.events:,} events of ~100 bytes; "
        f"idle: {args.idle_streams:,} streams; steady: {args.steady_rate:g} writes/s for "
        f"{args.steady_seconds:g} s to {args.steady_subscribers:,} streams"
    )
    warn = warnings(rows)
    parts = [
        "# Benchmarks",
        "",
        "watchroute and its peers (`bench/peers/`), measured in one run by `bench/run.py`: "
        "fan-out to many SSE streams, idle watchers, then watch versus polling and filtered versus "
        "unfiltered watchers (watchroute only); what each figure means is in `bench/README.md`.",
        "",
        "Command: `.venv/bin/python bench/run.py " + " ".join(argv) + "`",
        "",
        "## Machine",
        machine(args.speed),
        "",
        "## watchroute against its goals",
        "",
        goals(rows, args, ws, filt, wrote),
    ]
    if rows:
        parts += ["", "## Fan-out", sizes, "", table(rows, args)]
        if any(srv.key == "watchroute-workers" for srv, _ in rows):
            parts += [
                "",
                f"The worker-processes row is `watchroute serve --workers {args.workers}`: the "
                "watchers and the writes spread over the processes by the kernel, every process "
                "delivering every commit to its own watchers. The load generator runs on the same "
                "cores, so this shows what more processes buy where the cores are already shared.",
            ]
        parts += ["", "### Details", details(rows)]
    if warn:
        parts += ["", "### Warnings", *[f"- {w}" for w in warn]]
    if ws is not None:
        parts += ["", idle_section(rows, args, ws)]
    if polls is not None:
        parts += ["", polling.section(polls)]
    elif polls_note:
        parts += ["", "## Watch versus polling", "", polls_note]
    if filt is not None:
        if "error" in filt:
            parts += ["", "## Filtered versus unfiltered watchers", "", f"Not run: {filt['error']}"]
        else:
            parts += ["", filtered.section(filt)]
    if wrote is not None:
        if "put" in wrote or "batch" in wrote:
            parts += ["", writes.section(wrote, wrote["seconds"])]
        if "error" in wrote:
            parts += ["", "## Writes" if "put" not in wrote else "", f"Not run in full: {wrote['error']}"]
    if pg is not None:
        parts += ["", postgres.section(pg, " ".join([".venv/bin/python bench/run.py", *argv]))]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- main


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


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Fan-out benchmark of watchroute against its peers, then watch versus polling."
    )
    ap.add_argument(
        "--peers-dir",
        default=str(REPO / "bench" / "peers"),
        help="folder with the peer servers (default: bench/peers)",
    )
    ap.add_argument("--subscribers", type=int, help="burst: open streams (default 1000)")
    ap.add_argument("--events", type=int, help="burst: events published (default 1000; quick 200)")
    ap.add_argument(
        "--idle-streams", type=int, help="idle RSS: streams held open (default 10000; quick 2000)"
    )
    ap.add_argument("--steady-rate", type=float, default=200.0, help="steady: writes/s (200)")
    ap.add_argument("--steady-seconds", type=float, help="steady: duration (default 10; quick 5)")
    ap.add_argument(
        "--steady-subscribers", type=int, default=1000, help="steady: open streams (default 1000)"
    )
    ap.add_argument("--burst-timeout", type=float, help="burst: give up after (default 120 s; quick 60)")
    ap.add_argument(
        "--record-every",
        type=int,
        default=10,
        help="burst and steady: latency kept from every Kth stream (1 = all; default 10)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smaller run: 200 events, 2000 idle streams, 5 s steady, 5 s per polling run, fewer "
        "filtered writes",
    )
    ap.add_argument(
        "--only",
        help="comma list of what to run: watchroute,watchroute-workers,raw,sse,nchan (fan-out), "
        "ws (idle WebSocket watchers), polling, filtered, writes, "
        "postgres (bench/postgres.py's rows), leases",
    )
    ap.add_argument("--skip-polling", action="store_true", help="leave out watch versus polling")
    ap.add_argument("--skip-ws", action="store_true", help="leave out the idle WebSocket figure")
    ap.add_argument("--skip-filtered", action="store_true", help="leave out filtered versus unfiltered")
    ap.add_argument("--skip-writes", action="store_true", help="leave out write throughput")
    ap.add_argument(
        "--skip-postgres", action="store_true", help="leave out the PostgreSQL rows (bench/postgres.py)"
    )
    ap.add_argument(
        "--postgres-url",
        default=postgres.ADMIN_URL,
        help="PostgreSQL database to create the PostgreSQL rows' own databases from",
    )
    ap.add_argument("--skip-leases", action="store_true", help="leave out the sweep of TTL leases")
    ap.add_argument("--write-seconds", type=float, help="writes: seconds per run (default 10; quick 5)")
    ap.add_argument(
        "--ws-idle", type=int, help="idle WebSocket watchers (default: as many as --idle-streams)"
    )
    ap.add_argument("--filtered-watchers", type=int, default=1000, help="filtered: watchers (1000)")
    ap.add_argument(
        "--filtered-writes", type=int, help="filtered: writes, one delivery each (default 5000; quick 2000)"
    )
    ap.add_argument(
        "--unfiltered-writes",
        type=int,
        help="filtered: writes with unfiltered watchers (default 200; quick 100)",
    )
    ap.add_argument("--polling-clients", type=int, default=200, help="polling: clients (200)")
    ap.add_argument("--polling-seconds", type=float, help="polling: per run (default 15; quick 5)")
    ap.add_argument("--polling-rates", default="1,100", help="polling: writes/s, comma list (1,100)")
    ap.add_argument("--polling-docs", type=int, default=100, help="polling: documents (100)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each server, wait up to this many seconds for other processes to go quiet",
    )
    ap.add_argument("--watchroute-port", type=int, default=9100)
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run watchroute with this many worker processes (fan-out and writes; 1: not)",
    )
    ap.add_argument("--json", help="also write the raw results as JSON to this file")
    ap.add_argument("--write-docs", action="store_true", help="write the report to --docs-path")
    ap.add_argument("--docs-path", default=str(REPO / "docs" / "benchmarks.md"))
    a = ap.parse_args(argv)
    a.subscribers = a.subscribers or 1000
    a.events = a.events or (200 if a.quick else 1000)
    a.idle_streams = a.idle_streams or (2000 if a.quick else 10_000)
    a.ws_idle = a.ws_idle or a.idle_streams
    a.filtered_writes = a.filtered_writes or (2000 if a.quick else 5000)
    a.unfiltered_writes = a.unfiltered_writes or (100 if a.quick else 200)
    a.steady_seconds = a.steady_seconds or (5.0 if a.quick else 10.0)
    a.burst_timeout = a.burst_timeout or (60.0 if a.quick else 120.0)
    a.polling_seconds = a.polling_seconds or (5.0 if a.quick else 15.0)
    a.polling_rates = tuple(float(x) for x in a.polling_rates.split(","))
    keep = {k.strip() for k in a.only.split(",")} if a.only else None
    a.run_polling = not a.skip_polling and (keep is None or "polling" in keep)
    a.run_ws = not a.skip_ws and (keep is None or "ws" in keep)
    a.run_filtered = not a.skip_filtered and (keep is None or "filtered" in keep)
    a.run_writes = not a.skip_writes and (keep is None or "writes" in keep)
    a.run_postgres = not a.skip_postgres and (keep is None or "postgres" in keep)
    a.run_leases = not a.skip_leases and (keep is None or "leases" in keep)
    a.write_seconds = a.write_seconds or (5.0 if a.quick else 10.0)
    return a


def run_polling(args, workdir: Path, loop) -> tuple[list[dict] | None, str | None]:
    """Watch versus polling on a fresh watchroute: (results, None) or (None, why not)."""
    srv = watchroute_server(args, workdir, key="watchroute-polling")
    print("== watch versus polling (watchroute)", flush=True)
    if srv.unavailable:
        print(f"  not available: {srv.unavailable}", flush=True)
        return None, f"Not run: {srv.unavailable}."
    wait_for_quiet(args.quiet_wait)
    try:
        try:
            start(srv, workdir)
        except Exception as e:
            print(f"  did not start: {e}", flush=True)
            return None, f"Not run: watchroute did not start: {e}"
        res = loop.run_until_complete(
            polling.run_all(
                HOST,
                srv.port,
                srv.proc.pid,
                clients=args.polling_clients,
                seconds=args.polling_seconds,
                rates=args.polling_rates,
                docs=args.polling_docs,
                log=lambda m: print(m, flush=True),
                # the runs take a minute or more: a neighbour that starts meanwhile is waited out
                before_each=lambda: wait_for_quiet(min(args.quiet_wait, 10.0)),
            )
        )
        return res, None
    finally:
        stop(srv)


def run_ws_idle(args, workdir: Path, loop) -> dict:
    """Idle WebSocket watchers on a fresh watchroute (bench/idle_rss.py): a dict, or {"error": why}."""
    print(f"== idle WebSocket watchers (watchroute, {args.ws_idle:,})", flush=True)
    wait_for_quiet(args.quiet_wait)
    try:
        import idle_rss  # needs httpx and websockets, which the project brings

        where = workdir / "watchroute-ws"
        where.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        res = loop.run_until_complete(idle_rss.measure("ws", args.ws_idle, where))
        res["wall_s"] = time.monotonic() - t0
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}"[:300]}
    print(f"  ws: {_brief(res)}", flush=True)
    return res


def run_writes(args, workdir: Path, loop) -> dict:
    """Write throughput on a fresh watchroute (single PUTs, batches), then the HTTP floor."""
    print("== writes (watchroute, then the HTTP floor)", flush=True)
    if shutil.which("wrk") is None:
        print("  not available: wrk is not installed", flush=True)
        return {"error": "wrk is not installed (apt-get install wrk)"}
    seconds = args.write_seconds
    uvicorn = [sys.executable, "-m", "uvicorn", "asgi_floor:app", "--app-dir", str(REPO / "bench")]
    served_as_watchroute = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "off"]
    floor = Server(
        key="floor",
        label="uvicorn, ASGI floor",
        port=9104,
        cmd=[*uvicorn, "--port", "9104", *served_as_watchroute],
        cwd=REPO / "bench",
    )
    put = functools.partial(writes.run_put, connections=writes.PUT_CONNECTIONS, threads=2, seconds=seconds)

    def batch(url: str, collection: str) -> dict:
        return loop.run_until_complete(
            writes.run_batch(url, writes.BATCH_CONNECTIONS, writes.BATCH_SIZE, seconds, collection)
        )

    out: dict = {"seconds": seconds, "workers": args.workers}
    runs = [(watchroute_server(args, workdir, key="watchroute-writes"), {"put": put, "batch": batch})]
    if args.workers > 1:
        workers = watchroute_server(args, workdir, key="watchroute-writes-workers", workers=args.workers)
        runs.append((workers, {"put_workers": put, "batch_workers": batch}))
    runs.append((floor, {"floor": put}))
    for srv, modes in runs:
        if srv.unavailable:
            out["error"] = srv.unavailable
            return out
        wait_for_quiet(args.quiet_wait)
        try:
            start(srv, workdir)
            url = f"http://{HOST}:{srv.port}"
            for mode, run in modes.items():
                out[mode] = writes.measured(srv.proc.pid, functools.partial(run, url=url, collection=mode))
                print(f"  {mode}: " + fanout.brief(out[mode], WRITE_KEYS), flush=True)
        except Exception as e:
            out["error"] = f"{srv.label} did not start: {e}"[:300]
            print(f"  {out['error']}", flush=True)
            return out
        finally:
            stop(srv)
    return out


WRITE_KEYS = ("error", "writes_per_s", "p50", "p99", "p50_ms", "server_busy", "cpu_us_per_write")


def run_filtered(args, workdir: Path, loop) -> dict:
    """Filtered versus unfiltered watchers on a fresh watchroute: bench/filtered.py's dict."""
    srv = watchroute_server(args, workdir, key="watchroute-filtered")
    print("== filtered versus unfiltered watchers (watchroute)", flush=True)
    if srv.unavailable:
        print(f"  not available: {srv.unavailable}", flush=True)
        return {"error": srv.unavailable}
    wait_for_quiet(args.quiet_wait)
    try:
        try:
            start(srv, workdir)
        except Exception as e:
            print(f"  did not start: {e}", flush=True)
            return {"error": f"watchroute did not start: {e}"}
        try:
            return loop.run_until_complete(
                filtered.run_all(
                    HOST,
                    srv.port,
                    srv.proc.pid,
                    watchers=args.filtered_watchers,
                    filtered_writes=args.filtered_writes,
                    unfiltered_writes=args.unfiltered_writes,
                    control_writes=max(1000, args.filtered_writes // 2),
                    log=lambda m: print(m, flush=True),
                )
            )
        except Exception as e:
            print(f"  failed: {e!r}", flush=True)
            return {"error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        stop(srv)


def run_postgres(args, workdir: Path) -> dict:
    """bench/postgres.py's rows (each once, at this run's sizes): its dict, errors included."""
    print("== PostgreSQL (bench/postgres.py)", flush=True)
    options = argparse.Namespace(
        admin_url=args.postgres_url,
        only="writes,cross,resume,idle",
        repeat=1,
        write_seconds=args.write_seconds,
        watchers=args.steady_subscribers,
        rate=args.steady_rate,
        seconds=args.steady_seconds,
        kills=3,
        idle=args.idle_streams,
    )
    try:
        return postgres.run_all(options, workdir / "postgres")
    except Exception as e:  # PostgreSQL cannot be reached: said in the section
        return {"repeat": 1, "errors": {"postgres": f"{type(e).__name__}: {e}"[:300]}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="watchroute-bench-"))
    fleet = servers(args, workdir)
    # A row that says "not available" is easy to miss in a table written to the docs: a run
    # missing what it compares against stops here, before measuring anything.
    if missing := [srv for srv in fleet if srv.unavailable]:
        for srv in missing:
            print(f"error: {srv.label}: {srv.unavailable}", file=sys.stderr)
        print("(make bench installs what they need; --only runs a part of them)", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 2
    need = (
        max(
            args.subscribers,
            args.idle_streams,
            args.ws_idle,
            args.steady_subscribers,
            args.polling_clients,
            args.filtered_watchers,
        )
        + 2000
    )
    have = fanout.raise_nofile(need)  # before any server starts: they inherit it
    if have < need:
        print(f"warning: open-file limit {have} < {need}; large runs may fail", file=sys.stderr)
    args.speed = speed_check()
    rows: list[tuple[Server, dict | None]] = []
    polls: list[dict] | None = None
    polls_note = None if args.run_polling else "Not run (`--skip-polling`, or `--only` without `polling`)."
    ws: dict | None = None
    filt: dict | None = None
    wrote: dict | None = None
    pg: dict | None = None
    swept: list[dict] | None = None
    t_all = time.monotonic()
    loop = fanout.new_loop()
    asyncio.set_event_loop(loop)
    try:
        for srv in fleet:
            print(f"== {srv.label}", flush=True)
            wait_for_quiet(args.quiet_wait)
            try:
                try:
                    start(srv, workdir)
                except Exception as e:
                    srv.unavailable = f"did not start: {e}"
                    print(f"  not available: {srv.unavailable}", flush=True)
                    rows.append((srv, None))
                    continue
                rows.append((srv, loop.run_until_complete(measure(srv, args))))
            finally:
                stop(srv)
        if args.run_ws:
            ws = run_ws_idle(args, workdir, loop)
        if args.run_polling:
            polls, polls_note = run_polling(args, workdir, loop)
        if args.run_filtered:
            filt = run_filtered(args, workdir, loop)
        if args.run_writes:
            wrote = run_writes(args, workdir, loop)
        if args.run_postgres:
            pg = run_postgres(args, workdir)
        if args.run_leases:
            print("== the sweep of TTL leases (in-process)", flush=True)
            swept = leases.measure()
    finally:
        loop.close()
        for srv, _ in rows:
            stop(srv)
    out = report(rows, args, argv, polls, polls_note, ws, filt, wrote, pg)
    if swept is not None:
        out += "\n" + leases.section(swept)
    print()
    print(out)
    # the databases; logs are kept
    for db_dir in (
        "watchroute",
        "watchroute-workers",
        "watchroute-writes-workers",
        "watchroute-polling",
        "watchroute-filtered",
        "watchroute-ws",
        "watchroute-writes",
    ):
        shutil.rmtree(workdir / db_dir, ignore_errors=True)
    print(f"(total {time.monotonic() - t_all:.0f} s; server logs in {workdir})")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine_speed": args.speed,
                    **{s.key: (r if r is not None else {"unavailable": s.unavailable}) for s, r in rows},
                    "polling": polls if polls is not None else {"not_run": polls_note},
                    "idle_ws": ws if ws is not None else {"not_run": True},
                    "filtered": filt if filt is not None else {"not_run": True},
                    "writes": wrote if wrote is not None else {"not_run": True},
                    "postgres": pg if pg is not None else {"not_run": True},
                    "leases": swept if swept is not None else {"not_run": True},
                },
                indent=2,
                default=str,
            )
        )
    if args.write_docs:
        docs = Path(args.docs_path)
        docs.parent.mkdir(parents=True, exist_ok=True)
        # The figures behind the code are measured by hand, not by this run: keep them.
        kept = docs.read_text().partition(KEPT_SECTION)[2] if docs.exists() else ""
        docs.write_text(out.rstrip("\n") + "\n\n" + KEPT_SECTION + kept if kept else out)
        print(f"wrote {args.docs_path}")
    if failed := [srv for srv, _ in rows if srv.unavailable]:
        for srv in failed:
            print(f"error: {srv.label}: {srv.unavailable}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
