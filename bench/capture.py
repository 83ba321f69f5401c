"""Change capture benchmark: a bulk UPDATE reaching a watcher, and commit-to-watcher latency.

On a database of its own (created, then dropped with its slot), a table of --rows rows is
captured by a watchroute server; then
- throughput: one `UPDATE` of every row, timed from its COMMIT to the watcher's last event;
- latency: single-row transactions at --rate/s for --seconds, each event's arrival at the
  watcher minus its transaction's COMMIT returning, p50 and p99;
- with --decoders, the decoding paths alone on the same UPDATE: pgoutput read through a
  replication connection (psycopg2) and decoded by capture/pgoutput.py, against wal2json read
  with pg_logical_slot_get_changes (needs the postgresql-NN-wal2json package).

    .venv/bin/python bench/capture.py --decoders
    .venv/bin/python bench/capture.py --repeat 2 --write-docs   # also its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import select
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.capture_db import drop_slot  # noqa: E402 - the checkout is on the path first
from tests.support.server import ServerProcess  # noqa: E402

ADMIN = os.environ.get("WATCHROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _url(name: str) -> str:
    return ADMIN.rpartition("/")[0] + "/" + name


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def through_watchroute(url: str, slot: str, rows: int, rate: float, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        server = ServerProcess(
            Path(workdir), database=url, capture="bench", capture_slot=slot, history_events=rows * 4
        ).start(timeout=120)
        base = server.url
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    # The copy is in and the leader streams (its status in /readyz).
                    capture = httpx.get(f"{base}/readyz").json().get("capture", {})
                    copied = capture.get("leader") and not capture.get("copying")
                    if copied and httpx.get(f"{base}/v1/bench/{rows}").status_code == 200:
                        body = httpx.get(f"{base}/v1/bench", params={"limit": 1}).json()
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the copy did not finish"
                time.sleep(0.2)
            since = body["revision"]
            result = {"rows": rows}
            # Throughput: one UPDATE of every row.
            got = 0
            done = threading.Event()
            first_at: list[float] = []

            def watch(since: int, until: int) -> None:
                nonlocal got
                params = {"watch": "true", "since": since, "heartbeat": 1, "timeout": 120}
                with httpx.stream("GET", f"{base}/v1/bench", params=params, timeout=180) as r:
                    for line in r.iter_lines():
                        event = json.loads(line)
                        if event["type"] != "BOOKMARK":
                            got += 1
                            if not first_at:
                                first_at.append(time.perf_counter())
                        if event["revision"] >= until:
                            break
                done.set()

            watcher = threading.Thread(target=watch, args=(since, since + rows))
            watcher.start()
            time.sleep(0.5)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("UPDATE bench SET v = v + 1")
                committed = time.perf_counter()
                watcher.join(180)
            elapsed = time.perf_counter() - committed
            result["bulk_update_changes"] = got
            result["bulk_update_seconds"] = round(elapsed, 3)
            result["bulk_update_changes_per_s"] = round(got / elapsed)
            # Latency: single-row transactions at `rate`.
            arrivals: dict[int, float] = {}
            commits: dict[int, float] = {}
            count = int(rate * seconds)
            since = httpx.get(f"{base}/v1/bench", params={"limit": 1}).json()["revision"]

            def watch_latency() -> None:
                params = {"watch": "true", "since": since, "heartbeat": 1, "timeout": seconds + 30}
                with httpx.stream("GET", f"{base}/v1/bench", params=params, timeout=seconds + 60) as r:
                    for line in r.iter_lines():
                        event = json.loads(line)
                        if event["type"] != "BOOKMARK":
                            arrivals[event["object"]["data"]["v"]] = time.perf_counter()
                        if len(arrivals) >= count:
                            break

            watcher = threading.Thread(target=watch_latency)
            watcher.start()
            time.sleep(0.5)
            with psycopg.connect(url, autocommit=True) as conn:
                start = time.perf_counter()
                for i in range(count):
                    marker = -(i + 1)
                    conn.execute("UPDATE bench SET v = %s WHERE id = %s", (marker, i % rows + 1))
                    commits[marker] = time.perf_counter()
                    pause = start + (i + 1) / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
            watcher.join(seconds + 60)
            latencies = [(arrivals[m] - commits[m]) * 1000 for m in commits if m in arrivals]
            result["latency_transactions"] = count
            result["latency_received"] = len(latencies)
            result["latency_p50_ms"] = round(_percentile(latencies, 0.5), 2)
            result["latency_p99_ms"] = round(_percentile(latencies, 0.99), 2)
            return result
        finally:
            server.stop(timeout=30)


def decoders(url: str, rows: int) -> dict:
    """The bulk UPDATE decoded by each path alone: seconds from the first read to the last change."""
    import psycopg2
    import psycopg2.extras

    from watchroute.capture import pgoutput, tables, values

    result: dict = {}
    slot_p, slot_w = "bench_p_" + uuid.uuid4().hex[:8], "bench_w_" + uuid.uuid4().hex[:8]
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("DROP PUBLICATION IF EXISTS bench_pub; CREATE PUBLICATION bench_pub FOR TABLE bench")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot_p,))
            has_wal2json = True
            try:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot_w,))
            except psycopg.Error:
                has_wal2json = False
            conn.execute("UPDATE bench SET v = v + 1")
            # pgoutput, streamed and decoded to documents as capture does.
            rep = psycopg2.connect(
                url,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                options=values.SESSION_OPTIONS,
            )
            cur = rep.cursor()
            start = time.perf_counter()
            cur.start_replication(
                slot_name=slot_p,
                decode=False,
                options={"proto_version": "1", "publication_names": "bench_pub"},
            )
            converts: list = []
            names: list[str] = []
            seen = 0
            while seen < rows:
                message = cur.read_message()
                if message is None:
                    select.select([rep], [], [], 0.5)
                    continue
                decoded = pgoutput.decode(message.payload)
                if isinstance(decoded, pgoutput.Relation):
                    names = [n for n, _ in decoded.columns]
                    converts = [values.scalar(oid) for _, oid in decoded.columns]
                elif isinstance(decoded, pgoutput.RowChange) and decoded.new is not None:
                    {n: c(v) for n, c, v in zip(names, converts, decoded.new, strict=True)}  # type: ignore[arg-type]
                    tables.resource_id([decoded.new[0]])  # type: ignore[list-item]
                    seen += 1
            seconds = time.perf_counter() - start
            rep.close()
            result["pgoutput_changes_per_s"] = round(rows / seconds)
            if has_wal2json:
                import orjson

                start = time.perf_counter()
                seen = 0
                cur2 = conn.execute(
                    "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'format-version', '2')",
                    (slot_w,),
                )
                for (data,) in cur2:
                    change = orjson.loads(data)
                    if change.get("action") == "U":
                        {c["name"]: c["value"] for c in change["columns"]}
                        seen += 1
                seconds = time.perf_counter() - start
                result["wal2json_changes_per_s"] = round(seen / seconds)
            else:
                result["wal2json"] = "not installed, or not allowed by output_plugin_libraries"
        finally:
            drop_slot(slot_p)
            drop_slot(slot_w)
            conn.execute("DROP PUBLICATION IF EXISTS bench_pub")
    return result


def measure(args: argparse.Namespace) -> dict:
    """One run on a database of its own, dropped after with its slot."""
    name = "watchroute_bench_" + uuid.uuid4().hex[:8]
    slot = name
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = _url(name)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL, note text)")
                conn.execute(
                    "INSERT INTO bench SELECT g, 0, 'row ' || g FROM generate_series(1, %s::int) g",
                    (args.rows,),
                )
            result = through_watchroute(url, slot, args.rows, args.rate, args.seconds)
            if args.decoders:
                result.update(decoders(url, args.rows))
            return result
        finally:
            drop_slot(slot)
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    import commands
    from capture_report import replace_section, section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs (1)")
    parser.add_argument("--decoders", action="store_true", help="also compare pgoutput and wal2json")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--report-from", help="measure nothing: write the section of this --json file")
    parser.add_argument("--write-docs", action="store_true", help="replace its section of docs/benchmarks.md")
    parser.add_argument("--docs-path", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    if args.report_from:
        res = json.loads(Path(args.report_from).read_text())
    else:
        with psycopg.connect(ADMIN) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0].split()[0]  # type: ignore[index]
        res = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": commands.shown("bench/capture.py", sys.argv[1:]),
            "server_version": version,
            "load": f"{os.getloadavg()[0]:.0f}",
            "rate": args.rate,
            "runs": [],
        }
        for n in range(args.repeat):
            print(f"== change capture ({n + 1} of {args.repeat})", flush=True)
            run = measure(args)
            print(json.dumps(run, indent=2), flush=True)
            decoded = {k: run.pop(k) for k in list(run) if k.startswith(("pgoutput", "wal2json"))}
            if decoded:
                res["decoders"] = decoded
            res["runs"].append(run)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    text = section(res)
    print(text)
    if args.write_docs:
        path = Path(args.docs_path)
        path.write_text(replace_section(path.read_text() if path.exists() else "", text))
        print(f"wrote its section of {path}")


if __name__ == "__main__":
    main()
