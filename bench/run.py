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
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout
import leases
import postgres
from fanout_runs import measure, run_filtered, run_polling, run_ws_idle
from report import keeping_others, report, speed_check
from servers import REPO, Server, servers, start, stop, wait_for_quiet
from write_runs import run_postgres, run_writes

# The section of docs/benchmarks.md that a run leaves as it is.


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
        docs.write_text(keeping_others(docs.read_text() if docs.exists() else "", out))
        print(f"wrote {args.docs_path}")
    if failed := [srv for srv, _ in rows if srv.unavailable]:
        for srv in failed:
            print(f"error: {srv.label}: {srv.unavailable}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
