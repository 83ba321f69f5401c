"""The write runs of a benchmark: single PUTs and batches on watchroute (one process, then
several), the two floors under the same load (the bare ASGI app, and the same with watchroute's
store committing each write), and bench/postgres.py's rows."""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
from pathlib import Path

import fanout
import postgres
import writes
from servers import HOST, REPO, Server, start, stop, wait_for_quiet, watchroute_server

WRITE_KEYS = ("error", "writes_per_s", "p50", "p99", "p50_ms", "server_busy", "cpu_us_per_write")


def run_writes(args, workdir: Path, loop) -> dict:
    """Write throughput on a fresh watchroute (single PUTs, batches), then the two floors."""
    print("== writes (watchroute, then the HTTP floor and the store floor)", flush=True)
    if shutil.which("wrk") is None:
        print("  not available: wrk is not installed", flush=True)
        return {"error": "wrk is not installed (apt-get install wrk)"}
    seconds = args.write_seconds
    floor = asgi_server("floor", "uvicorn, ASGI floor", "asgi_floor:app", 9104, REPO / "bench")
    # Its lifespan opens the store, on a database made in a folder of its own.
    store_folder = workdir / "store-floor"
    store_floor = asgi_server(
        "store-floor",
        "uvicorn, ASGI floor and the store",
        "asgi_store_floor:app",
        9105,
        store_folder,
        lifespan=True,
    )
    store_floor.prepare = lambda: store_folder.mkdir(parents=True, exist_ok=True)
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
    runs.append((store_floor, {"store_floor": put}))
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


def asgi_server(key: str, label: str, app: str, port: int, cwd: Path, lifespan: bool = False) -> Server:
    """An app of bench/ on uvicorn, served as watchroute is (httptools, uvloop, no access log)."""
    return Server(
        key=key,
        label=label,
        port=port,
        cmd=[
            *(sys.executable, "-m", "uvicorn", app, "--app-dir", str(REPO / "bench"), "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
            *("--lifespan", "on" if lifespan else "off"),
        ],
        cwd=cwd,
    )


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
