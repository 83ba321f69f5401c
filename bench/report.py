"""docs/benchmarks.md: the machine, watchroute against its goals, and each run's tables."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from pathlib import Path

import filtered
import polling
import postgres
import writes
from servers import Server


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


def _sections(doc: str) -> list[str]:
    """`doc` cut before each `## ` heading: its head, then a part per section."""
    parts = doc.split("\n## ")
    return [parts[0]] + ["## " + part for part in parts[1:]]


def keeping_others(old: str, new: str) -> str:
    """`new` (this run's sections) with every section of `old` that this run does not write:
    those of the other benchmarks (change capture, bridges) and the measurements behind the
    code, taken by hand. Each goes back after the section it followed in `old`."""
    ours = _sections(new)
    titles = [part.partition("\n")[0] for part in ours]
    previous = None
    for part in _sections(old)[1:]:
        title = part.partition("\n")[0]
        if title not in titles:
            at = titles.index(previous) + 1 if previous in titles else len(ours)
            ours.insert(at, part)
            titles.insert(at, title)
        previous = title
    return "\n".join(part.rstrip("\n") + "\n" for part in ours)
