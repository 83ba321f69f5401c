"""Write throughput: single-resource PUTs (wrk) and `POST /v1/_batch` (this process).

Against a server you started (loopback only):

    .venv/bin/watchroute serve --port 8123 --database sqlite:////tmp/wt/db &
    .venv/bin/python bench/writes.py --url http://127.0.0.1:8123 put --connections 32 --seconds 10
    .venv/bin/python bench/writes.py --url http://127.0.0.1:8123 batch --connections 4 --size 1000

`put` runs wrk with `put_unique.lua`: every request creates a new resource with a ~100-byte
document. `batch` keeps `--connections` requests of `--size` put ops each in flight, every op a
new resource, and counts the writes of the batches answered 200. Each prints one line of figures;
`--json` prints them as JSON instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psutil

HERE = Path(__file__).resolve().parent


def run_put(url: str, connections: int, threads: int, seconds: float, collection: str) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed")
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(HERE / "put_unique.lua"),
        url,
        "--",
        collection,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "mode": "put",
        "writes_per_s": round(rate),
        "p50": p50.group(1) if p50 else None,
        "p99": p99.group(1) if p99 else None,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "command": " ".join(command),
    }


def batch_body(prefix: str, start: int, size: int, collection: str) -> bytes:
    ops = [
        {
            "op": "put",
            "collection": collection,
            "id": f"{prefix}{i}",
            "data": {
                "symbol": f"ID{i:08d}",
                "price": i % 1000 + 0.25,
                "volume": i * 7,
                "owner": "bench",
                "tags": ["a", "b"],
                "ok": True,
            },
        }
        for i in range(start, start + size)
    ]
    return orjson.dumps({"ops": ops})


class Connection:
    """One keep-alive HTTP/1.1 connection, raw: the load generator should cost little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def run_batch(url: str, connections: int, size: int, seconds: float, collection: str) -> dict:
    prefix = f"b{os.getpid()}-{int(time.time())}-"
    counter = 0
    written = 0
    failed = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    parts = urlsplit(url)
    clients = [Connection(parts.hostname or "127.0.0.1", parts.port or 80) for _ in range(connections)]
    for client in clients:
        await client.open()

    async def worker(client: Connection) -> None:
        nonlocal counter, written, failed
        while time.perf_counter() < deadline:
            start = counter
            counter += size
            body = batch_body(prefix, start, size, collection)
            sent = time.perf_counter()
            status, answer = await client.post("/v1/_batch", body)
            latencies.append(time.perf_counter() - sent)
            if status == 200:
                written += size
            else:
                failed += 1
                if failed < 3:
                    print(status, answer[:300], file=sys.stderr)

    began = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    elapsed = time.perf_counter() - began
    for client in clients:
        client.close()
    latencies.sort()
    return {
        "mode": "batch",
        "writes_per_s": round(written / elapsed),
        "batches": len(latencies),
        "size": size,
        "connections": connections,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "failed": failed,
    }


# ---------------------------------------------------------------- in bench/run.py

PUT_CONNECTIONS, BATCH_CONNECTIONS, BATCH_SIZE = 32, 4, 1000


def _server_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the server and of the processes it started."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measured(pid: int, run: Callable[[], dict]) -> dict:
    """`run()`'s figures, with the server's CPU over it: how busy, and per write."""
    proc = psutil.Process(pid)
    cpu0, t0 = _server_cpu(proc), time.monotonic()
    try:
        res = run()
    except Exception as e:  # reported in the table, not fatal to the suite
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    busy = (_server_cpu(proc) - cpu0) / (time.monotonic() - t0)
    res["server_busy"] = busy
    if res.get("writes_per_s"):
        res["cpu_us_per_write"] = busy / res["writes_per_s"] * 1e6
    return res


def section(res: dict, seconds: float) -> str:
    """The Markdown section of bench/run.py: single writes, batches, and the HTTP floor."""
    rows = [
        ("put", f"single: `PUT /v1/bench/<new id>`, wrk, {PUT_CONNECTIONS} connections"),
        ("batch", f"`POST /v1/_batch` of {BATCH_SIZE:,} puts, {BATCH_CONNECTIONS} connections"),
        ("put_workers", f"single, `--workers {res.get('workers')}`"),
        ("batch_workers", f"`_batch`, `--workers {res.get('workers')}`"),
        ("floor", "floor: uvicorn + an ASGI app that reads the body and answers 201 in one write (same wrk)"),
        ("store_floor", "store floor: the same app, committing each body through watchroute's store"),
    ]
    head = ["writes", "writes/s", "latency p50 / p99", "server CPU busy", "server CPU per write"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in rows:
        r = res.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label} | error: {r['error']} | | | |")
            continue
        latency = f"{r['p50']} / {r['p99']}" if r.get("p99") else f"{r.get('p50_ms')} ms (p50 of a batch)"
        failed = r.get("non_2xx") or r.get("failed")
        rate = f"{r['writes_per_s']:,}" + (f" ({failed} failed)" if failed else "")
        per_write = f"{r['cpu_us_per_write']:,.0f} us" if "cpu_us_per_write" in r else "-"
        lines.append(f"| {label} | {rate} | {latency} | {r['server_busy']:.0%} | {per_write} |")
    parts = [
        "## Writes",
        "",
        f"Each on a fresh server, {seconds:g} s, no watcher open; the load generator on the same "
        "machine. watchroute on its default embedded SQLite with group commit: a write is answered "
        "only once its commit is done, so every acknowledged write survives `kill -9` "
        "(`tests/e2e/test_crash_and_shutdown.py` kills the server under load and finds every one). "
        "Single writes: wrk with `bench/put_unique.lua`, every request a new resource with a "
        "~100-byte document. The floor row is the same wrk against `bench/asgi_floor.py` on "
        "uvicorn with httptools and uvloop, as watchroute is served: what the HTTP server alone "
        "costs a request here, the ceiling for any Python app on it. The store floor row adds "
        "watchroute's own SQLite store to that app (`bench/asgi_store_floor.py`): the body parsed, "
        "committed by the group-commit writer and answered after the commit, with no routing, "
        "security or schema: the least a write that keeps watchroute's guarantees costs here.",
        "",
        *lines,
    ]
    cpu = {key: res.get(key, {}).get("cpu_us_per_write") for key in ("put", "floor", "store_floor")}
    if cpu["put"] and cpu["floor"]:
        sentence = (
            f"A single write costs the server {cpu['put']:,.0f} us of CPU ({cpu['put'] / cpu['floor']:.1f}x "
            f"the floor), of which the HTTP server takes {cpu['floor']:,.0f} us on its own"
        )
        if cpu["store_floor"]:
            sentence += (
                f"; the floor with the store's commit costs {cpu['store_floor']:,.0f} us "
                f"({cpu['store_floor'] / cpu['floor']:.1f}x the floor)"
            )
        parts += ["", sentence + "."]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8123")
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--json", action="store_true")
    sub = parser.add_subparsers(dest="mode", required=True)
    put = sub.add_parser("put")
    put.add_argument("--connections", type=int, default=32)
    put.add_argument("--threads", type=int, default=2)
    put.add_argument("--seconds", type=float, default=10)
    batch = sub.add_parser("batch")
    batch.add_argument("--connections", type=int, default=4)
    batch.add_argument("--size", type=int, default=1000)
    batch.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.mode == "put":
        result = run_put(args.url, args.connections, args.threads, args.seconds, args.collection)
    else:
        result = asyncio.run(run_batch(args.url, args.connections, args.size, args.seconds, args.collection))
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print("  ".join(f"{k}={v}" for k, v in result.items() if k != "command"))


if __name__ == "__main__":
    main()
