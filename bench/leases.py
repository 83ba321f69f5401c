"""What a sweep of TTL leases costs with many live leases: it must not grow with their number.

In-process, on a fresh SQLite store: N leases that lapse in an hour (live), then (1) a sweep
tick that finds nothing lapsed, timed many times, and (2) a sweep that deletes 1,000 leases
lapsed among the N live ones. Both are range reads of the expiry index, so the figures at
N = 1,000 and N = 100,000 should be alike.

    .venv/bin/python bench/leases.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from watchroute.leases import Sweeper
from watchroute.store import WriteOp
from watchroute.store.sqlite import SQLiteStore

LAPSING = 1000
TICKS = 200
CHUNK = 5000  # leases per batch write while filling the store


async def measure_one(live: int, workdir: Path) -> dict[str, Any]:
    store = SQLiteStore(str(workdir / f"leases-{live}.db"))
    await store.open(lambda changes: None)
    try:
        for at in range(0, live, CHUNK):
            await store.write(
                [
                    WriteOp("put", "presence", f"u{n}", data={"n": n}, ttl=3600)
                    for n in range(at, min(live, at + CHUNK))
                ]
            )
        sweeper = Sweeper(store, 1.0)
        ticks = []
        for _ in range(TICKS):
            start = time.perf_counter()
            assert await sweeper.sweep() == 0
            ticks.append(time.perf_counter() - start)
        await store.write([WriteOp("put", "typing", f"t{n}", data={}, ttl=1) for n in range(LAPSING)])
        await asyncio.sleep(1.05)
        start = time.perf_counter()
        deleted = await sweeper.sweep()
        sweep = time.perf_counter() - start
        assert deleted == LAPSING, deleted
    finally:
        await store.close()
    return {
        "live": live,
        "idle_tick_us": statistics.median(ticks) * 1e6,
        "sweep_1000_ms": sweep * 1e3,
    }


def measure(sizes: tuple[int, ...] = (1000, 10_000, 100_000)) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [asyncio.run(measure_one(live, Path(tmp))) for live in sizes]


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| live leases | idle sweep tick (median) | sweep deleting 1,000 lapsed |",
        "|---:|---:|---:|",
    ]
    rows += [f"| {r['live']:,} | {r['idle_tick_us']:.0f} us | {r['sweep_1000_ms']:.0f} ms |" for r in results]
    return "\n".join(rows)


def section(results: list[dict[str, Any]]) -> str:
    """The report's section (bench/run.py)."""
    return (
        "## TTL leases: the sweep\n\n"
        "`bench/leases.py`, in-process on SQLite: a sweep tick while nothing has lapsed, and a sweep "
        "that deletes 1,000 lapsed leases (each its own guarded delete, group-committed), among "
        "N live leases. Both read a range of the expiry index: the cost does not grow with N.\n\n"
        + table(results)
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="live leases, comma-separated")
    args = ap.parse_args()
    print(table(measure(tuple(int(s) for s in args.sizes.split(",")))))


if __name__ == "__main__":
    main()
