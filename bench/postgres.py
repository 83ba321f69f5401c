"""PostgreSQL rows: watchroute instances on one PostgreSQL database, beside SQLite.

Every scenario makes a database of its own on the PostgreSQL server of `--admin-url` and drops
it afterwards; the instances are `watchroute serve --database postgresql://...` processes on
free loopback ports.

- **writes**: single PUTs (wrk) and `_batch` writes/s on one PostgreSQL instance, beside a
  fresh SQLite watchroute measured the same way in the same run; the instance's CPU, and
  PostgreSQL's own (its background processes and the benchmark database's backends, psutil),
  since it shares the machine's cores.
- **cross**: 3 instances, watchers spread evenly over them, R writes/s on the first: latency
  from a write's send to its delivery, on the writing instance and on the two others.
- **resume**: the Python client (`watchroute.client`) watching through nginx
  (`deploy/nginx.conf`) in front of 3 instances; the instance holding its watch is SIGKILLed
  while writes go on to another: the time from the kill to the next event the client receives.
- **idle**: K idle SSE watchers on one instance: its RSS per watcher and its database
  connections (`pg_stat_activity`), before and with them open.

    .venv/bin/python bench/postgres.py                    # all, twice each
    .venv/bin/python bench/postgres.py --only writes,cross --repeat 1
    .venv/bin/python bench/postgres.py --write-docs       # also replaces its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import commands
import fanout
import idle_rss
import writes
from postgres_cluster import Instance, PostgresCpu, connections, fresh_database, instances, nginx_in_front
from postgres_report import replace_section, section

REPO = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("WATCHROUTE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------- writes


def run_writes(admin_url: str, workdir: Path, seconds: float) -> dict:
    """Single and `_batch` writes/s, SQLite then PostgreSQL, each on a fresh single instance."""
    out: dict = {}
    put = lambda url, mode: writes.run_put(url, writes.PUT_CONNECTIONS, 2, seconds, mode)  # noqa: E731

    def batch(url: str, mode: str) -> dict:
        coro = writes.run_batch(url, writes.BATCH_CONNECTIONS, writes.BATCH_SIZE, seconds, mode)
        return asyncio.run(coro)

    with instances(f"sqlite:///{workdir / 'sqlite' / 'bench.db'}", workdir / "sqlite", 1) as (inst,):
        for mode, run in (("put", put), ("batch", batch)):
            out[f"sqlite_{mode}"] = writes.measured(inst.pid, lambda r=run, m=mode: r(inst.url, m))
    with fresh_database(admin_url) as url, instances(url, workdir / "pg-writes", 1) as (inst,):
        for mode, run in (("put", put), ("batch", batch)):
            pg, t0 = PostgresCpu(url), time.monotonic()
            res = writes.measured(inst.pid, lambda r=run, m=mode: r(inst.url, m))
            res["postgres_busy"] = pg.seconds() / (time.monotonic() - t0)
            pg.stop()
            if res.get("writes_per_s"):
                res["postgres_us_per_write"] = res["postgres_busy"] / res["writes_per_s"] * 1e6
            out[f"pg_{mode}"] = res
    return out


# ---------------------------------------------------------------- across instances


async def run_cross(
    database: str | None, urls: list[str], pids: list[int], watchers: int, rate: float, seconds: float
) -> dict:
    """Watchers spread over the instances, writes on the first at `rate`, open loop: latency per
    delivery from the write's send (its due time if no connection was free) to the read."""
    here, there = fanout.Stats(), fanout.Stats()
    targets = [
        fanout.Target.from_url(f"i{i}", url, sub_path="/v1/bench?watch=true", pub_path="/v1/bench")
        for i, url in enumerate(urls)
    ]
    subs: list[fanout.Subscriber] = []
    share = [watchers // len(urls) + (i < watchers % len(urls)) for i in range(len(urls))]
    for i, (target, n) in enumerate(zip(targets, share, strict=True)):
        subs += await fanout.open_subscribers(target, n, here if i == 0 else there, record_every=10)
    publishers: list[fanout.Publisher] = []
    idle: list[fanout.Publisher] = []
    free = asyncio.Condition()
    errors: list[str] = []
    probe = [fanout.ServerProbe(pid) for pid in pids]
    try:
        warm = fanout.Publisher(targets[0])
        await warm.post(targets[0].make_body(-1, 0))
        publishers.append(warm)
        idle.append(warm)
        await asyncio.sleep(1.0)
        total = int(rate * seconds)
        start = time.time_ns() + 20_000_000
        here.arm(total * share[0], start)
        there.arm(total * (watchers - share[0]), start)
        cpu0, pg = [p.cpu() for p in probe], PostgresCpu(database) if database else None
        me, gen0 = psutil.Process(), sum(psutil.Process().cpu_times()[:2])
        tasks: set[asyncio.Task] = set()

        acked: list[int] = []  # from the write's send to its answer: the commit's share of the latency

        async def send(pub: fanout.Publisher, body: bytes, stamp: int) -> None:
            try:
                await pub.post(body)
                acked.append(time.time_ns() - stamp)
            except Exception as e:  # reported; the schedule goes on
                errors.append(repr(e))
            async with free:
                idle.append(pub)
                free.notify()

        for k in range(total):
            due = start + int(k * 1e9 / rate)
            if (delay := (due - time.time_ns()) / 1e9) > 0:
                await asyncio.sleep(delay)
            if not idle and len(publishers) < 16:
                publishers.append(fanout.Publisher(targets[0]))
                idle.append(publishers[-1])
            waited = not idle
            async with free:
                await free.wait_for(lambda: bool(idle))
            now = time.time_ns()
            stamp = fanout.send_stamp(due, now, waited)
            task = asyncio.ensure_future(send(idle.pop(), targets[0].make_body(k, stamp), stamp))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(here.done, *([there.done] if len(urls) > 1 else [])), 15)
        elapsed = (time.time_ns() - start) / 1e9
        busy = [(p.cpu() - c) / elapsed for p, c in zip(probe, cpu0, strict=True)]
        pg_busy = pg.seconds() / elapsed if pg else None
        generator_busy = (sum(me.cpu_times()[:2]) - gen0) / elapsed
        if pg:
            pg.stop()
    finally:
        for pub in publishers:
            pub.close()
        await fanout.close_readers(subs)
    return {
        "watchers": watchers,
        "rate": rate,
        "seconds": seconds,
        "delivered": here.count + there.count,
        "expected": total * watchers,
        "errors": errors[:3],
        "same": fanout.latency_summary(here.lat),
        "other": fanout.latency_summary(there.lat),
        "acknowledged": fanout.latency_summary(acked),
        "instance_busy": busy,
        "postgres_busy": pg_busy,
        "generator_busy": generator_busy,
    }


# ---------------------------------------------------------------- the client's resume


def holding_watch(group: list[Instance]) -> Instance | None:
    """The instance serving the client's watch: the one whose `watchroute_watchers` gauge is 1
    while every other's is 0 (a watch the previous client closed may still be counted for a
    moment, and killing the wrong instance would measure nothing)."""
    counts = []
    for inst in group:
        try:
            text = httpx.get(inst.url + "/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        gauge = [line for line in text.splitlines() if line.startswith("watchroute_watchers ")]
        counts.append(float(gauge[0].split()[1]) if gauge else 0.0)
    return group[counts.index(1.0)] if sorted(counts) == [0.0] * (len(group) - 1) + [1.0] else None


async def resume_once(group: list[Instance], balanced: str, interval: float) -> float:
    from watchroute.client import AsyncClient

    async with AsyncClient(balanced) as client, httpx.AsyncClient() as writer:
        watch = client.watch("resume")
        events = watch.__aiter__()
        seen: list[tuple[float, int]] = []

        async def read() -> None:
            async for event in events:
                if event.type != "BOOKMARK":
                    seen.append((time.monotonic(), event.revision))

        reader = asyncio.create_task(read())
        try:
            k = 0
            while not seen or (victim := await asyncio.to_thread(holding_watch, group)) is None:
                await writer.put(group[0].url + f"/v1/resume/w{k}", json={"k": k})
                k += 1
                await asyncio.sleep(interval)
            others = [inst for inst in group if inst is not victim]
            await asyncio.to_thread(victim.kill)
            killed = time.monotonic()
            last = seen[-1][1]
            deadline = killed + 30
            while time.monotonic() < deadline and not any(t > killed and r > last for t, r in seen):
                await writer.put(others[k % len(others)].url + f"/v1/resume/w{k}", json={"k": k})
                k += 1
                await asyncio.sleep(interval)
            arrived = [t for t, r in seen if t > killed and r > last]
            await asyncio.to_thread(victim.start)
            return arrived[0] - killed if arrived else float("inf")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def run_resume(database: str, workdir: Path, times: int) -> dict:
    with instances(database, workdir / "resume", 3) as group:
        balancer, balanced = nginx_in_front([inst.url for inst in group], workdir)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(balanced + "/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer")
                time.sleep(0.1)
            seconds = [asyncio.run(resume_once(group, balanced, 0.02)) for _ in range(times)]
        finally:
            balancer.terminate()
            balancer.wait(10)
    return {"seconds": seconds}


# ---------------------------------------------------------------- idle watchers


async def run_idle(admin_url: str, database: str, workdir: Path, n: int) -> dict:
    with instances(database, workdir / "idle", 1) as (inst,):
        server = idle_rss.Server.__new__(idle_rss.Server)  # its RSS and quiet-wait, our process
        server.port, server.url, server.process = inst.port, inst.url, psutil.Process(inst.pid)
        idle_rss.close_sse(await idle_rss.open_sse(server, 50))
        httpx.put(inst.url + "/v1/idle/warm", json={})
        base, conns0 = await server.quiet_rss(), connections(admin_url, database)
        watches = await idle_rss.open_sse(server, n)
        loaded, conns = await server.quiet_rss(), connections(admin_url, database)
        httpx.put(inst.url + "/v1/idle/probe", json={})
        await asyncio.wait_for(idle_rss.sse_all_receive(watches), 60)
        idle_rss.close_sse(watches)
    return {
        "watchers": n,
        "rss_before_mb": base / 2**20,
        "rss_open_mb": loaded / 2**20,
        "kb_per_watcher": (loaded - base) / n / 1024,
        "connections_before": conns0,
        "connections_open": conns,
    }


def run_all(args, workdir: Path) -> dict:
    import psycopg  # the PostgreSQL extra: only these rows need it

    keep = set(args.only.split(","))
    res: dict = {
        "repeat": args.repeat,
        "errors": {},
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        with psycopg.connect(args.admin_url, connect_timeout=3) as conn:
            res["server_version"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL cannot be reached at {args.admin_url}: {exc}".strip()) from exc
    for name in ("writes", "cross", "resume", "idle"):
        if name not in keep:
            continue
        runs = []
        for n in range(args.repeat):
            print(f"== PostgreSQL {name} ({n + 1} of {args.repeat})", flush=True)
            try:
                if name == "writes":
                    runs.append(run_writes(args.admin_url, workdir / f"w{n}", args.write_seconds))
                else:
                    runs.append(run_in_database(name, args, workdir / f"{name}{n}"))
            except Exception as e:  # reported in the section, the other rows still run
                res["errors"][name] = f"{type(e).__name__}: {e}"[:300]
                print(f"  failed: {res['errors'][name]}", flush=True)
                break
            print(f"  {runs[-1]}", flush=True)
        if runs:
            res[name] = runs
    return res


def on_uvloop(coro):
    """`coro` run on uvloop, as fanout.py's generator runs: the default loop costs the readers
    of 1,000 streams enough CPU to add its own queue to the latency."""
    with asyncio.Runner(loop_factory=fanout.new_loop) as runner:
        return runner.run(coro)


def run_in_database(name: str, args, workdir: Path) -> dict:
    """One run of `cross`, `resume` or `idle` on a database of its own."""
    with fresh_database(args.admin_url) as url:
        if name == "cross":
            with instances(url, workdir, 3) as group:
                urls, pids = [i.url for i in group], [i.pid for i in group]
                res = on_uvloop(run_cross(url, urls, pids, args.watchers, args.rate, args.seconds))
            # The same load on one SQLite instance, at the same time of the same day: the reference.
            with instances(f"sqlite:///{workdir / 'sqlite' / 'bench.db'}", workdir / "sqlite", 1) as (inst,):
                reference = run_cross(None, [inst.url], [inst.pid], args.watchers, args.rate, args.seconds)
                res["sqlite"] = on_uvloop(reference)
            return res
        if name == "resume":
            return run_resume(url, workdir, args.kills)
        return on_uvloop(run_idle(args.admin_url, url, workdir, args.idle))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admin-url", default=ADMIN_URL, help="a database to create the benchmark's from")
    ap.add_argument("--only", default="writes,cross,resume,idle")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each row (2)")
    ap.add_argument("--write-seconds", type=float, default=10.0)
    ap.add_argument("--watchers", type=int, default=1000, help="cross: watchers over 3 instances")
    ap.add_argument("--rate", type=float, default=200.0, help="cross: writes/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="cross: duration")
    ap.add_argument("--kills", type=int, default=3, help="resume: kills per run")
    ap.add_argument("--idle", type=int, default=10_000, help="idle: watchers")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument(
        "--report-from",
        help="measure nothing: write the section of the run whose --json file this is",
    )
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--docs-path", default=str(REPO / "docs" / "benchmarks.md"))
    args = ap.parse_args(argv)
    # Stopped by a signal, the instances it started and its databases still go (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_from:
        res, workdir = json.loads(Path(args.report_from).read_text()), None
    else:
        fanout.raise_nofile(args.idle + args.watchers + 2000)
        workdir = Path(tempfile.mkdtemp(prefix="watchroute-bench-pg-"))
        try:
            res = run_all(args, workdir)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        res["command"] = commands.shown("bench/postgres.py", argv)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    text = section(res, res["command"])
    print(text)
    if args.write_docs:
        path = Path(args.docs_path)
        path.write_text(replace_section(path.read_text() if path.exists() else "", text))
        print(f"wrote its section of {path}")
    if workdir:
        print(f"(logs in {workdir})")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
