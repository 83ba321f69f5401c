"""Filtered versus unfiltered watchers: server CPU per delivered event, end to end through sockets.

A collection `ticks` holds D documents (D = N, the number of watchers: 1000), document `dNNNN`
with `"symbol": "SNNNN"`. Write k is a REST `PUT /v1/ticks/d{k % D}` of a ~100-byte JSON object
`{"_t": <time_ns>, "seq": k, "symbol": "S{k % D}", "pad": "xx.."}`, sent on one keep-alive
connection, each write waiting for its response (the same write pattern in every mode). Two sets
of N SSE watchers (`GET /v1/ticks?watch=true`, `Accept: text/event-stream`), one after the other:

* **unfiltered**: every watcher receives every write (N deliveries per write);
* **filtered**: watcher i asks for `filter=symbol=S{i}`: N different equality filters, each write
  delivered to exactly one watcher;
* **single**: one unfiltered watcher, one delivery per write as filtered;
* **batched**: the filtered watchers, every write one `POST /v1/_batch` of all D documents: one
  commit, one delivery to each watcher, as many per commit as unfiltered.

The write path costs far more than one delivery (a REST PUT is a few hundred microseconds of
server CPU, a delivery about ten), and a filtered write makes one delivery, so the write's CPU is
measured and subtracted. With the watchers open, writes go in alternating chunks either to `ticks`
(the watched collection) or to `quiet`, a collection with the same documents that nobody watches:
the same request, the same store work, no delivery. Server CPU per delivered event =
(CPU of the `ticks` chunks - CPU of the `quiet` chunks) / deliveries, with as many writes in
each. The chunks go ticks, quiet, quiet, ticks, ticks, quiet, ... so that a slow drift of the
write cost cancels out. A `ticks` chunk ends when its last delivery has reached its watcher.
Server CPU is the process's CPU clock (`clock_gettime` on its process CPU clock, nanoseconds),
so that short chunks are measured exactly.

A control run with no watchers at all does the same alternation: its difference per write is
what the method reads when there is nothing to find (the noise floor).

Deliveries are counted per watcher and checked: an unfiltered watcher must receive exactly every
write to `ticks` of the run, a filtered one exactly the writes carrying its symbol, and none
receives any write to `quiet`.

Against a server you started (loopback only)::

    .venv/bin/python bench/filtered.py --url http://127.0.0.1:9100 --pid PID
    .venv/bin/python bench/filtered.py --url http://127.0.0.1:9100 --pid PID --watchers 200 \
        --filtered-writes 2000 --unfiltered-writes 100

`bench/run.py` runs it against a fresh watchroute (`--only filtered` runs nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import statistics
import time

import fanout
import orjson
import psutil

_FIND_SYMBOL = re.compile(rb'"symbol": ?"(S\d+)"').findall
MARKER = fanout.MARKER
WATCHED = "ticks"
CONTROL = "quiet"
HEARTBEAT = 300  # seconds: no BOOKMARK events during the run, only deliveries
TRIM = 0.02  # the costliest 2% of each collection's writes are left out (see trimmed_mean)
BLOCKS = 10


def symbol(i: int) -> str:
    return f"S{i:04d}"


class ServerClock:
    """CPU seconds of one process (all its threads, exited ones included), to the nanosecond."""

    def __init__(self, pid: int):
        self.pid = pid
        self.clock = ((~pid) << 3) | 2  # the process's CPU clock (Linux: CPUCLOCK_SCHED, whole process)
        try:
            time.clock_gettime_ns(self.clock)
        except OSError:  # not Linux, or not allowed: psutil's ticks
            self.clock = None
            self.proc = psutil.Process(pid)

    def __call__(self) -> float:
        if self.clock is not None:
            return time.clock_gettime_ns(self.clock) / 1e9
        t = self.proc.cpu_times()
        return t.user + t.system


class Tally:
    __slots__ = ("done", "goal", "total")

    def __init__(self):
        self.total = 0
        self.goal = 1 << 62
        self.done: asyncio.Future | None = None

    async def reach(self, goal: int, timeout: float) -> bool:
        if self.total >= goal:
            return True
        self.goal = goal
        self.done = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self.done, timeout)
            return True
        except TimeoutError:
            return False


class Watch(fanout.StreamReader):
    """One SSE watch: counts the writes it receives and those that carry another symbol."""

    __slots__ = ("count", "index", "symbol", "tally", "wrong")

    def __init__(self, tally: Tally, req: bytes, index: int, symbol: bytes | None):
        super().__init__(req)
        self.index = index
        self.tally = tally
        self.symbol = symbol  # None: unfiltered
        self.count = 0
        self.wrong = 0

    def lines(self, data: bytes) -> None:
        n = data.count(MARKER)
        if not n:
            return
        if self.symbol is not None:
            found = _FIND_SYMBOL(data)
            self.wrong += sum(1 for s in found if s != self.symbol) + (n - len(found))
        self.count += n
        t = self.tally
        t.total += n
        if t.total >= t.goal and t.done is not None and not t.done.done():
            t.done.set_result(None)


async def open_watches(
    host: str, port: int, n: int, filtered: bool, tally: Tally, concurrency: int = 200, timeout: float = 60.0
) -> list[Watch]:

    def request(i: int) -> bytes:
        query = f"watch=true&heartbeat={HEARTBEAT}" + (f"&filter=symbol%3D{symbol(i)}" if filtered else "")
        return (
            f"GET /v1/{WATCHED}?{query} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    return await fanout.open_readers(
        host,
        port,
        n,
        lambda i: Watch(tally, request(i), i, symbol(i).encode() if filtered else None),
        concurrency,
        timeout,
    )


class Writer:
    """Sequential PUTs on one keep-alive connection, each waiting for its answer."""

    def __init__(self, host: str, port: int, docs: int):
        self.host, self.port, self.docs = host, port, docs
        self.conn: fanout.HttpConn | None = None
        self.seq = {WATCHED: 0, CONTROL: 0}

    def body(self, k: int) -> bytes:
        head = b'{"_t":%d,"seq":%d,"symbol":"%s","pad":"' % (
            time.time_ns(),
            k,
            symbol(k % self.docs).encode(),
        )
        return head + b"x" * max(0, fanout.BODY_SIZE - len(head) - 2) + b'"}'

    async def _send(self, raw: bytes) -> int:
        if self.conn is None or self.conn.lost:
            self.conn = await fanout.HttpConn.connect(self.host, self.port)
        return await self.conn.request(raw)

    async def put(self, collection: str) -> None:
        k = self.seq[collection]
        self.seq[collection] = k + 1
        body = self.body(k)
        raw = (
            b"PUT /v1/%s/d%04d HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n"
            % (collection.encode(), k % self.docs, self.host.encode(), self.port, len(body))
            + body
        )
        status = await self._send(raw)
        if not 200 <= status < 300:
            raise RuntimeError(f"PUT /v1/{collection}/d{k % self.docs:04d} answered HTTP {status}")

    async def batch(self, collection: str) -> None:
        """One `POST /v1/_batch` that writes every document of `collection` once, in one commit."""
        k = self.seq[collection]
        self.seq[collection] = k + self.docs
        parts = []
        for j in range(k, k + self.docs):
            parts.append(
                b'{"op":"put","collection":"%s","id":"d%04d","data":%s}'
                % (collection.encode(), j % self.docs, self.body(j))
            )
        await self._post_batch(b'{"ops":[' + b",".join(parts) + b"]}", f"a batch to {collection}")

    async def _post_batch(self, body: bytes, what: str) -> None:
        raw = (
            b"POST /v1/_batch HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (self.host.encode(), self.port, len(body)) + body
        )
        status = await self._send(raw)
        if status != 200:
            raise RuntimeError(f"{what}: POST /v1/_batch answered HTTP {status}")

    async def seed(self) -> None:
        """Every document in both collections, so that every measured write is an update."""
        ops = [
            {
                "op": "put",
                "collection": c,
                "id": f"d{i:04d}",
                "data": {"_t": 0, "seq": -1, "symbol": symbol(i), "pad": "seed"},
            }
            for c in (WATCHED, CONTROL)
            for i in range(self.docs)
        ]
        for start in range(0, len(ops), 5000):
            await self._post_batch(orjson.dumps({"ops": ops[start : start + 5000]}), "seeding")

    def close(self):
        if self.conn is not None and self.conn.tr is not None:
            self.conn.tr.close()


def _order(chunks: int) -> list[str]:
    """ticks, quiet, quiet, ticks, ticks, quiet, ...: either collection as often first as second."""
    out: list[str] = []
    for i in range(chunks):
        out += [WATCHED, CONTROL] if i % 2 == 0 else [CONTROL, WATCHED]
    return out


def trimmed_mean(values: list[float], trim: float = TRIM) -> float:
    """The mean of `values` without the costliest `trim` share of them."""
    v = sorted(values)
    return statistics.fmean(v[: max(1, round(len(v) * (1 - trim)))])


async def alternate(
    writer: Writer,
    clock: ServerClock,
    writes: int,
    chunk: int,
    tally: Tally | None,
    per_write: int,
    timeout: float = 30.0,
    blocks: int = BLOCKS,
    batched: bool = False,
) -> dict:
    """`writes` writes to `ticks` and as many to `quiet`, in chunks of `chunk`, each write's
    server CPU taken on its own (for a `ticks` write: until its deliveries have all arrived).

    per_write: deliveries each write to `ticks` makes (0 with no watchers).
    batched: each write is a `_batch` of every document instead of one PUT.
    """
    write = writer.batch if batched else writer.put
    chunks = max(1, round(writes / chunk))
    sizes = [writes // chunks + (1 if i < writes % chunks else 0) for i in range(chunks)]
    cpu: dict[str, list[float]] = {WATCHED: [], CONTROL: []}
    goal = tally.total if tally else 0
    late = 0
    t0 = time.monotonic()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for j, collection in enumerate(_order(chunks)):
            wait = collection == WATCHED and tally is not None and per_write
            out = cpu[collection]
            for _ in range(sizes[j // 2]):
                c0 = clock()
                await write(collection)
                if wait:
                    goal += per_write
                    if tally.total < goal and not await tally.reach(goal, timeout):
                        late += 1
                out.append(clock() - c0)
    finally:
        if gc_was:
            gc.enable()
    watched, control = cpu[WATCHED], cpu[CONTROL]
    # The writes in `blocks` consecutive blocks (each with as many of either): the spread of the
    # figure between blocks gives its standard error.
    per_block = []
    step = len(watched) / blocks
    for i in range(blocks):
        lo, hi = round(i * step), round((i + 1) * step)
        if hi - lo >= 2:
            per_block.append(trimmed_mean(watched[lo:hi]) - trimmed_mean(control[lo:hi]))
    added = trimmed_mean(watched) - trimmed_mean(control)
    stderr = statistics.stdev(per_block) / len(per_block) ** 0.5 if len(per_block) > 1 else float("nan")
    res = {
        "writes": writes,
        "chunk": chunk,
        "seconds": time.monotonic() - t0,
        "write_us": trimmed_mean(control) * 1e6,  # the write path alone, per write
        "added_us_per_write": added * 1e6,
        "added_stderr_us": stderr * 1e6,
        # the same without leaving out the costliest writes, and the medians
        "added_us_per_write_all": (statistics.fmean(watched) - statistics.fmean(control)) * 1e6,
        "added_us_per_write_median": (statistics.median(watched) - statistics.median(control)) * 1e6,
        "watched_cpu_s": sum(watched),
        "control_cpu_s": sum(control),
        "late": late,
    }
    if per_write:
        res["us_per_delivery"] = added / per_write * 1e6
        res["stderr_us"] = stderr / per_write * 1e6
    return res


async def run_mode(
    host: str,
    port: int,
    writer: Writer,
    clock: ServerClock,
    mode: str,
    watchers: int,
    writes: int,
    chunk: int,
) -> dict:
    batched = mode == "batched"
    filtered = mode == "filtered" or batched
    if mode == "single":
        watchers = 1  # one unfiltered watcher: one delivery per write, as with the filters
    tally = Tally()
    t0 = time.monotonic()
    watches = await open_watches(host, port, watchers, filtered, tally)
    try:
        # Warm-up, not measured: every document written once (every filtered watcher gets one
        # event), a few writes to `quiet`, then the counts start from zero.
        if batched:
            warm, per_write = 1, watchers  # a batch writes every document: one event per watcher
            await writer.batch(WATCHED)
            await writer.batch(CONTROL)
        else:
            warm = writer.docs if filtered else 20
            per_write = 1 if filtered else watchers
            for _ in range(warm):
                await writer.put(WATCHED)
            for _ in range(20):
                await writer.put(CONTROL)
        await tally.reach(warm * per_write, 30.0)
        first = writer.seq[WATCHED]
        for w in watches:
            w.count = w.wrong = 0
        tally.total = 0
        res = await alternate(writer, clock, writes, chunk, tally, per_write, batched=batched)
        await asyncio.sleep(0.3)  # anything unexpected still on its way arrives and is counted
    finally:
        await fanout.close_readers(watches)
    # Check every watcher's count against the writes to `ticks` it should have received.
    ks = range(first, writer.seq[WATCHED])
    if filtered:
        per_symbol = [0] * writer.docs
        for k in ks:
            per_symbol[k % writer.docs] += 1
        expected_each = [per_symbol[i] for i in range(watchers)]
    else:
        expected_each = [writes] * watchers
    by_index = sorted(watches, key=lambda w: w.index)
    exact = sum(1 for w, e in zip(by_index, expected_each, strict=True) if w.count == e)
    res.update(
        mode=mode,
        watchers=watchers,
        expected=sum(expected_each),
        delivered=sum(w.count for w in watches),
        watchers_exact=exact,
        wrong_symbol=sum(w.wrong for w in watches),
        wall_s=time.monotonic() - t0,
    )
    return res


async def run_all(
    host: str,
    port: int,
    pid: int,
    watchers: int = 1000,
    filtered_writes: int = 5000,
    unfiltered_writes: int = 200,
    control_writes: int = 2000,
    chunk: int = 100,
    unfiltered_chunk: int = 20,
    batched_writes: int = 100,
    log=print,
) -> dict:
    """Control (no watchers), unfiltered, filtered, one unfiltered watcher (the same one
    delivery per write as filtered), and filtered with every document written in one batch (as
    many deliveries per commit as unfiltered); all on one server."""
    clock = ServerClock(pid)
    writer = Writer(host, port, docs=watchers)  # one document, and one symbol, per watcher
    out: dict = {"watchers": watchers, "docs": writer.docs}
    try:
        await writer.seed()
        for _ in range(200):  # warm the write path
            await writer.put(WATCHED)
            await writer.put(CONTROL)
        t0 = time.monotonic()
        out["control"] = await alternate(writer, clock, control_writes, chunk, None, 0)
        out["control"]["wall_s"] = time.monotonic() - t0
        log(f"  control: {brief(out['control'])}")
        for mode, writes, size in (
            ("unfiltered", unfiltered_writes, unfiltered_chunk),
            ("filtered", filtered_writes, chunk),
            ("single", filtered_writes, chunk),  # as many: its figure is the smaller, so the noisier
            ("batched", batched_writes, max(1, unfiltered_chunk // 2)),
        ):
            try:
                out[mode] = await run_mode(host, port, writer, clock, mode, watchers, writes, size)
            except Exception as e:
                out[mode] = {"error": f"{type(e).__name__}: {e}"[:300]}
            log(f"  {mode}: {brief(out[mode])}")
    finally:
        writer.close()
    return out


def brief(r: dict) -> str:
    keys = (
        "error",
        "us_per_delivery",
        "stderr_us",
        "added_us_per_write",
        "write_us",
        "delivered",
        "expected",
        "watchers_exact",
        "wrong_symbol",
        "wall_s",
    )
    return fanout.brief(r, keys)


# ---------------------------------------------------------------- report


def verified(res: dict) -> bool:
    """Every watcher of both modes received exactly what it should have."""
    for key in ("unfiltered", "filtered"):
        r = res.get(key, {})
        if "delivered" not in r:
            return False
        if r["delivered"] != r["expected"] or r["watchers_exact"] != r["watchers"] or r["wrong_symbol"]:
            return False
    return True


def ratio(res: dict, against: str = "unfiltered", of: str = "filtered") -> float | None:
    f, u = res.get(of, {}), res.get(against, {})
    if "us_per_delivery" not in f or "us_per_delivery" not in u or u["us_per_delivery"] <= 0:
        return None
    return f["us_per_delivery"] / u["us_per_delivery"]


def _check(r: dict) -> str:
    ok = r["delivered"] == r["expected"] and r["watchers_exact"] == r["watchers"] and not r["wrong_symbol"]
    text = f"{r['delivered']:,} / {r['expected']:,}"
    if ok:
        return text + ", every watcher exact"
    return (
        text + f"; exact on {r['watchers_exact']:,} of {r['watchers']:,} watchers; {r['wrong_symbol']} wrong"
    )


def section(res: dict, level: str = "##") -> str:
    n = res["watchers"]
    head = [
        "watchers",
        "writes to the watched collection",
        "deliveries (received / expected)",
        "write path, per write (unwatched writes)",
        "added by the watchers, per write",
        "server CPU per delivered event",
    ]
    rows = []
    labels = {
        "control": "none (control)",
        "unfiltered": f"{n:,} unfiltered",
        "filtered": f"{n:,}, each `filter=symbol=S0000`..`S{n - 1:04d}`",
        "single": "1 unfiltered (one delivery per write, as filtered)",
        "batched": f"{n:,} filtered as above, every write a `_batch` of all {res['docs']:,} documents",
    }
    for key in ("unfiltered", "filtered", "single", "batched", "control"):
        r = res.get(key)
        if r is None:
            continue
        if "error" in r:
            rows.append([labels[key], f"error: {r['error']}", "", "", "", ""])
            continue
        per = r.get("us_per_delivery")
        rows.append(
            [
                labels[key],
                f"{r['writes']:,}",
                "-" if key == "control" else _check(r),
                f"{r['write_us']:.0f} us",
                f"{r['added_us_per_write']:,.1f} ± {r['added_stderr_us']:,.1f} us",
                "-" if per is None else f"**{per:.1f} us** ± {r['stderr_us']:.1f}",
            ]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    q = ratio(res)
    parts = [
        f"{level} Filtered versus unfiltered watchers",
        "",
        f"{n:,} SSE watchers on a collection of {res['docs']:,} documents, each `dNNNN` with "
        '`"symbol": "SNNNN"`; every write is a REST `PUT` of a ~100-byte document, sent one at a '
        "time on one keep-alive connection, write k to document k mod "
        f"{res['docs']:,}. Unfiltered, each write reaches all {n:,} watchers; filtered, watcher i "
        "asks for `symbol=S{i}` and each write reaches exactly one; each write waits for its "
        "response and its deliveries before the next. A REST write costs the server far more than a "
        "delivery, so it is subtracted: with the watchers open, writes alternate in chunks between "
        "the watched collection and a second one with the same documents that nobody watches, each "
        "write's server CPU read on its own (the server's process CPU clock, nanoseconds; for a "
        "watched write until its deliveries arrived). Server CPU per delivered event = (mean per "
        "watched write - mean per unwatched write) / deliveries per write, both means without the "
        "costliest 2% of their writes (garbage collection, checkpoints); ± is the standard error "
        "over 10 blocks of the writes. The control row does the same with no watchers open: what "
        "the method reads when there is nothing to find. Details in `bench/README.md`.",
        "",
        *lines,
    ]
    if q is not None:
        parts += [
            "",
            f"Filtered / unfiltered, server CPU per delivered event: **{q:.2f}x**.",
        ]
    q1 = ratio(res, "single")
    if q1 is not None:
        parts += [
            "",
            f"Filtered / one unfiltered watcher, both one delivery per write: **{q1:.2f}x**. "
            "A delivery that is the only one of its write pays alone for what a write's deliveries "
            f"share (the hub's pass, the socket write to a client that was idle); with {n:,} "
            f"unfiltered watchers those costs are split {n:,} ways. The second ratio isolates what "
            f"the {n - 1:,} filters that do not match cost each delivery.",
        ]
    q2 = ratio(res, of="batched")
    if q2 is not None:
        parts += [
            "",
            f"Filtered, every write a batch of all {res['docs']:,} documents / unfiltered: **{q2:.2f}x**. "
            f"Each commit then makes {n:,} deliveries in both, one to each filtered watcher or the "
            "same event to every unfiltered one, so what a commit's deliveries share is split alike; "
            "what remains is what filtering costs a delivery: the index look-up, matching both "
            "states, and an event encoded for one watcher instead of once for all.",
        ]
    warn = []
    for key in ("unfiltered", "filtered", "single", "batched"):
        r = res.get(key, {})
        if "error" in r or not r:
            continue
        if r["delivered"] != r["expected"] or r["watchers_exact"] != r["watchers"] or r["wrong_symbol"]:
            warn.append(
                f"{key}: deliveries do not match what each watcher should receive; the figure is void."
            )
    if warn:
        parts += ["", *[f"- {w}" for w in warn]]
    return "\n".join(parts)


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", required=True, help="watchroute base URL, e.g. http://127.0.0.1:9100")
    ap.add_argument("--pid", type=int, required=True, help="the server's pid (its CPU is measured)")
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--filtered-writes", type=int, default=5000)
    ap.add_argument("--unfiltered-writes", type=int, default=200)
    ap.add_argument("--control-writes", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=100, help="writes per chunk, control and filtered (100)")
    ap.add_argument("--unfiltered-chunk", type=int, default=20, help="writes per chunk, unfiltered (20)")
    ap.add_argument("--batched-writes", type=int, default=100, help="batches of every document (100)")
    a = ap.parse_args(argv)
    host, port = fanout.loopback(ap, a.url)
    fanout.raise_nofile(a.watchers + 1000)
    res = fanout.run(
        run_all(
            host,
            port,
            a.pid,
            a.watchers,
            a.filtered_writes,
            a.unfiltered_writes,
            a.control_writes,
            a.chunk,
            a.unfiltered_chunk,
            a.batched_writes,
        )
    )
    print()
    print(section(res))


if __name__ == "__main__":
    main()
