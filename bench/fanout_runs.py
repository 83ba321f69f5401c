"""The watch runs of a benchmark: fan-out to many SSE streams (each server in turn), idle
WebSocket watchers, watch versus polling and filtered versus unfiltered watchers (watchroute)."""

from __future__ import annotations

import time
from pathlib import Path

import fanout
import filtered
import polling
from servers import HOST, Server, log_tail, start, stop, wait_for_quiet, watchroute_server


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
            res[name] = {"error": f"server exited ({srv.proc.returncode}): {log_tail(srv)}"}
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
