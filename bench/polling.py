"""Watch versus polling: N clients kept within 1 s of fresh, by polling a list or by one watch each.

A collection of `docs` resources (~100-byte JSON documents) changes at a fixed rate (open loop,
PUTs to the documents in turn) for `seconds` seconds, and `clients` clients must each stay within
`interval` (1 s) of the current state:

* **poll**: every client `GET /v1/{c}` (the whole list, one page) once per interval on its own
  keep-alive connection, the clients' polls spread evenly over the interval (client i polls at
  start + i/N*interval + j*interval). A poll that falls due while the client's previous one is
  still unanswered is sent as soon as that answer arrives, and counted as late.
* **watch**: every client holds one SSE watch (`GET /v1/{c}?watch=true`,
  `Accept: text/event-stream`).

Measured over the `seconds` window only (the drain that follows is not counted): server CPU
(user+system of its process tree), HTTP requests served (polls and writes answered), bytes the
clients received (headers, bodies, chunk framing, SSE heartbeats: everything read from the
sockets), and staleness: every write k is stamped `{"_t": <time_ns at send>, "seq": k, ...}` and
goes to document k % docs, so that a client that sees document d at seq s knows it has every write
k <= s to d. Staleness of write k at a client = time of the socket read that first gave the client
write k or a later write to the same document, minus k's stamp. Watch events carry the document,
so the same stamp gives the delivery time.

The load generator is one uvloop process of bare asyncio Protocols: per poll response it reads the
list's `"revision"` and, only if it moved, runs one regex over the body; per watch read one regex.

Against a server you started (loopback only)::

    .venv/bin/python bench/polling.py --url http://127.0.0.1:9100 --pid PID
    .venv/bin/python bench/polling.py --url http://127.0.0.1:9100 --pid PID --quick --rates 100

`bench/run.py` runs it against a fresh watchroute after the fan-out scenarios (`--skip-polling`
leaves it out, `--only polling` runs nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

import fanout
import psutil

_time_ns = time.time_ns
# the stamp and the sequence number of a document, as they come back in a list or an event
_FIND_DOC = re.compile(rb'"_t": ?(\d+), ?"seq": ?(-?\d+)').findall
_REVISION = b'"revision":'

MODES = ("poll", "watch")
MODE_LABEL = {"poll": "polling", "watch": "watching (SSE)"}


@dataclass
class Plan:
    """One run: where, which collection, how many clients and documents, how fast, which mode."""

    host: str
    port: int
    collection: str
    mode: str = "poll"
    rate: float = 1.0  # writes/s
    seconds: float = 15.0
    clients: int = 200
    docs: int = 100
    doc_bytes: int = 100
    interval: float = 1.0  # poll interval, i.e. the freshness each client must keep
    pid: int | None = None
    drain: float = 3.0  # after the window, how long the last writes may take to reach everyone

    def doc_body(self, seq: int, t_ns: int) -> bytes:
        head = b'{"_t":%d,"seq":%d,"pad":"' % (t_ns, seq)
        return head + b"x" * max(0, self.doc_bytes - len(head) - 2) + b'"}'

    def put_request(self, seq: int, t_ns: int) -> bytes:
        body = self.doc_body(seq, t_ns)
        return (
            b"PUT /v1/%s/d%d HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n"
            % (self.collection.encode(), seq % self.docs, self.host.encode(), self.port, len(body))
            + body
        )

    def list_request(self, etag: bytes = b"") -> bytes:
        # A careful poller sends the list's ETag back and pays no body while nothing changed.
        condition = b"If-None-Match: %s\r\n" % etag if etag else b""
        return b"GET /v1/%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json\r\n%s\r\n" % (
            self.collection.encode(),
            self.host.encode(),
            self.port,
            condition,
        )

    def watch_target(self) -> fanout.Target:
        return fanout.Target(
            name=self.collection,
            host=self.host,
            port=self.port,
            sub_path=f"/v1/{self.collection}?watch=true",
        )


@dataclass
class Tally:
    """Counters shared by the clients and the writer of one run."""

    times: list[int]  # stamp of write k
    docs: int
    active: bool = False
    nbytes: int = 0  # received by the clients
    polls_done: int = 0
    polls_late: int = 0
    poll_errors: int = 0
    reconnects: int = 0
    writes_done: int = 0
    write_errors: list[str] = field(default_factory=list)
    count: int = 0  # (write, client) pairs seen
    lat: list[int] = field(default_factory=list)  # their staleness, ns


# ---------------------------------------------------------------- clients


class Poller(asyncio.Protocol):
    """One polling client: one keep-alive connection, one request at a time, whole list parsed.

    Keeps, per document, the highest seq it has seen; a response that shows a higher one
    delivers every write to that document up to it.
    """

    def __init__(self, plan: Plan, tally: Tally):
        self.plan = plan
        self.tally = tally
        self.tr: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # length of the response being read, once its headers are in
        self.body_at = 0
        self.busy = False
        self.pending = False
        self.rev = -1
        self.etag = b""
        self.seen = [-(1 << 62)] * plan.docs
        self.first: asyncio.Future = asyncio.get_running_loop().create_future()
        self.reconnecting: asyncio.Future | None = None

    # -- connection
    def connection_made(self, tr):
        self.tr = tr
        self.buf = b""
        self.need = -1

    def connection_lost(self, exc):
        self.tr = None
        if self.busy:  # the answer will not come: the next poll reconnects
            self.busy = False
            self.pending = False
            self.tally.poll_errors += 1
        if not self.first.done():
            self.first.set_exception(ConnectionError(f"closed before the first answer: {exc}"))

    async def _reconnect(self):
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, self.plan.host, self.plan.port)
        except OSError:
            self.busy = False
            self.tally.poll_errors += 1
            return
        self.tally.reconnects += 1
        self.tr.write(self.plan.list_request(self.etag))

    def poll(self):
        if self.busy:
            if not self.pending:
                self.pending = True
                self.tally.polls_late += 1
            return
        self.busy = True
        if self.tr is None or self.tr.is_closing():
            self.reconnecting = asyncio.ensure_future(self._reconnect())
        else:
            self.tr.write(self.plan.list_request(self.etag))

    # -- response
    def data_received(self, data: bytes):
        self.tally.nbytes += len(data)
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    break
                head = buf[:i].lower()
                if head.startswith(b"http/1.1 304"):  # nothing new: no body
                    buf = buf[i + 4 :]
                    self.busy = False
                    if self.tally.active:
                        self.tally.polls_done += 1
                    if self.pending:
                        self.pending = False
                        self.poll()
                    continue
                e = head.find(b"\r\netag:")
                if e >= 0:
                    end = head.find(b"\r\n", e + 2)
                    self.etag = buf[e + 8 : end if end > 0 else i].strip()
                j = head.find(b"\r\ncontent-length:")
                if j < 0 or not head.startswith(b"http/1.1 200"):
                    self.tr.close()  # counted as an error by connection_lost
                    if not self.first.done():
                        self.first.set_exception(ConnectionError(f"list answered {buf[:i][:200]!r}"))
                    return
                end = head.find(b"\r\n", j + 2)
                self.body_at = i + 4
                self.need = self.body_at + int(head[j + 17 : end if end > 0 else len(head)])
            if len(buf) < self.need:
                break
            now = _time_ns()
            body = buf[self.body_at : self.need]
            buf = buf[self.need :]
            self.need = -1
            self.busy = False
            self._got(body, now)
            if self.pending:
                self.pending = False
                self.poll()
        self.buf = buf

    def _got(self, body: bytes, now: int):
        # the list's revision is its last field: if it did not move, nothing in the list did
        r = body.rfind(_REVISION)
        rev = int(body[r + 11 : body.index(b",", r)])
        if not self.first.done():  # the starting state
            self.rev = rev
            self._scan(body, now, False)
            self.first.set_result(None)
            return
        if not self.tally.active:
            return
        self.tally.polls_done += 1
        if rev != self.rev:
            self.rev = rev
            self._scan(body, now, True)

    def _scan(self, body: bytes, now: int, count: bool):
        seen, docs, tally = self.seen, self.plan.docs, self.tally
        times, lat = tally.times, tally.lat
        n = 0
        for t, s in _FIND_DOC(body):
            s = int(s)
            d = s % docs
            prev = seen[d]
            if s <= prev:
                continue
            seen[d] = s
            if not count or s < 0:
                continue
            # every write to d after the last one seen, up to s, is now known to this client
            k = max(prev + docs, d)
            while k < s:
                lat.append(now - times[k])
                n += 1
                k += docs
            lat.append(now - int(t))
            n += 1
        tally.count += n


class Watcher(fanout.Subscriber):
    """fanout's SSE subscriber (records the staleness of every `_t` it reads), counting bytes."""

    __slots__ = ("tally",)

    def data_received(self, data: bytes):
        self.tally.nbytes += len(data)
        super().data_received(data)


async def open_pollers(plan: Plan, tally: Tally, concurrency: int = 100, timeout: float = 60.0):
    """Connect every client and make its first poll (its starting state, not counted)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    out: list[Poller] = []

    async def one():
        async with sem:
            _, p = await loop.create_connection(lambda: Poller(plan, tally), plan.host, plan.port)
            out.append(p)
            p.poll()
            await p.first

    async def close_all() -> None:
        for p in out:
            if p.tr:
                p.tr.close()

    await _open_all(plan.clients, one, close_all, timeout)
    return out


async def open_watchers(plan: Plan, tally: Tally, stats: fanout.Stats, concurrency: int = 100, timeout=60.0):
    loop = asyncio.get_running_loop()
    req = plan.watch_target().sub_request()
    sem = asyncio.Semaphore(concurrency)
    out: list[Watcher] = []

    def make():
        w = Watcher(stats, req, True)
        w.tally = tally
        return w

    async def one():
        async with sem:
            _, w = await loop.create_connection(make, plan.host, plan.port)
            out.append(w)
            await w.ready

    await _open_all(plan.clients, one, lambda: fanout.close_readers(out), timeout)
    return out


async def _open_all(count: int, one, close_all, timeout: float) -> None:
    """Run `one()` `count` times concurrently; on failure or timeout, cancel and close all."""
    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for t in tasks:
            t.cancel()
        await close_all()
        raise


# ---------------------------------------------------------------- writer


async def seed(plan: Plan):
    """Create (or reset) the documents, each at a negative seq congruent to its index."""
    conn = await fanout.HttpConn.connect(plan.host, plan.port)
    try:
        for d in range(plan.docs):
            status = await conn.request(plan.put_request(d - plan.docs, 0))
            if not 200 <= status < 300:
                raise RuntimeError(f"seeding answered HTTP {status}")
    finally:
        conn.tr.close()


async def write_loop(plan: Plan, tally: Tally, start: int, max_conns: int = 8) -> int:
    """Open loop: write k is due at start + k/rate. Returns how many writes waited for a connection.

    As in fanout.run_steady, a write that had to wait for a free connection carries its due time
    as its stamp, so a slow server shows as staleness rather than as a lower rate.
    """
    total = len(tally.times)
    step = 1e9 / plan.rate
    idle: list[fanout.HttpConn] = []
    conns: list[fanout.HttpConn] = []
    free = asyncio.Condition()
    tasks: set[asyncio.Task] = set()
    late = 0

    async def send(conn: fanout.HttpConn, raw: bytes):
        try:
            if conn.lost:
                conns.remove(conn)
                conn = await fanout.HttpConn.connect(plan.host, plan.port)
                conns.append(conn)
            status = await conn.request(raw)
            if 200 <= status < 300:
                tally.writes_done += 1
            else:
                tally.write_errors.append(f"HTTP {status}")
        except Exception as e:
            tally.write_errors.append(repr(e))
        async with free:
            idle.append(conn)
            free.notify()

    try:
        for k in range(total):
            due = start + int(k * step)
            delay = (due - _time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            waited = False
            if not idle and len(conns) < max_conns:
                c = await fanout.HttpConn.connect(plan.host, plan.port)
                conns.append(c)
                idle.append(c)
            if not idle:
                waited = True
                async with free:
                    await free.wait_for(lambda: bool(idle))
            conn = idle.pop()
            now = _time_ns()
            stamp = fanout.send_stamp(due, now, waited)
            late += waited
            tally.times[k] = stamp
            t = asyncio.ensure_future(send(conn, plan.put_request(k, stamp)))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    finally:
        for c in conns:
            if c.tr is not None:
                c.tr.close()
    return late


# ---------------------------------------------------------------- one run


async def _sleep_until(t_ns: int):
    d = (t_ns - _time_ns()) / 1e9
    if d > 0:
        await asyncio.sleep(d)


async def run_one(plan: Plan) -> dict:
    probe = fanout.ServerProbe(plan.pid)
    me = psutil.Process()
    total = round(plan.rate * plan.seconds)
    tally = Tally(times=[0] * total, docs=plan.docs)
    expected = total * plan.clients
    await seed(plan)
    stats = fanout.Stats()  # watch mode: fanout's subscribers count and record into it
    pollers: list[Poller] = []
    watchers: list[Watcher] = []
    snaps: dict[str, tuple] = {}

    def snap():
        return (
            _time_ns(),
            probe.cpu(),
            sum(me.cpu_times()[:2]),
            fanout.machine_busy(),
            tally.nbytes,
            tally.polls_done,
            tally.writes_done,
        )

    try:
        if plan.mode == "poll":
            pollers = await open_pollers(plan, tally)
        else:
            watchers = await open_watchers(plan, tally, stats)
        await probe.settle()
        start = _time_ns() + 50_000_000
        end = start + int(plan.seconds * 1e9)
        tally.active = True
        stats.arm(expected, _time_ns())  # every write is stamped later than this

        async def window():
            await _sleep_until(start)
            snaps["start"] = snap()
            await _sleep_until(end)
            snaps["end"] = snap()

        win = asyncio.ensure_future(window())
        writer = asyncio.ensure_future(write_loop(plan, tally, start))
        if plan.mode == "poll":
            # one ticker for all clients: poll j is due at start + j/(N/interval), client j % N
            step = plan.interval * 1e9 / plan.clients
            give_up = end + int((plan.interval + plan.drain) * 1e9)
            j = 0
            while True:
                now = _time_ns()
                while start + int(j * step) <= now:
                    pollers[j % plan.clients].poll()
                    j += 1
                if now >= give_up or (now >= end and writer.done() and tally.count >= expected):
                    break
                await asyncio.sleep(max(0.0, (start + int(j * step) - _time_ns()) / 1e9))
        else:
            await _sleep_until(end)
        late_writes = await writer
        await win
        if plan.mode == "watch":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stats.done), plan.drain)
            tally.count, tally.lat = stats.count, stats.lat
        tally.active = False
    finally:
        for p in pollers:
            if p.tr is not None:
                p.tr.close()
        await fanout.close_readers(watchers)
    (t0, c0, g0, a0, b0, p0, w0), (t1, c1, g1, a1, b1, p1, w1) = snaps["start"], snaps["end"]
    wall = max(1e-9, (t1 - t0) / 1e9)
    lat = tally.lat
    lat.sort()
    within = 0
    if lat:
        lim = int(plan.interval * 1e9)
        lo, hi = 0, len(lat)  # bisect: how many are <= the interval
        while lo < hi:
            mid = (lo + hi) // 2
            if lat[mid] <= lim:
                lo = mid + 1
            else:
                hi = mid
        within = lo
    res = {
        "mode": plan.mode,
        "rate": plan.rate,
        "seconds": plan.seconds,
        "wall_s": wall,
        "clients": plan.clients,
        "docs": plan.docs,
        "interval": plan.interval,
        "writes": total,
        "writes_done": w1 - w0,
        "late_writes": late_writes,
        "write_errors": tally.write_errors[:3],
        "achieved_rate": (w1 - w0) / wall,
        "polls_done": p1 - p0,
        "polls_target": plan.clients * plan.seconds / plan.interval if plan.mode == "poll" else 0,
        "polls_late": tally.polls_late,
        "poll_errors": tally.poll_errors,
        "reconnects": tally.reconnects,
        "requests": (p1 - p0) + (w1 - w0),
        "bytes_to_clients": b1 - b0,
        "server_cpu_s": c1 - c0,
        "server_cpu_util": (c1 - c0) / wall,
        "generator_cpu_util": (g1 - g0) / wall,
        "other_cpu_util": max(0.0, (a1 - a0) - (c1 - c0) - (g1 - g0)) / wall,
        "expected": expected,
        "delivered": tally.count,
        "within_interval": within / expected if expected else float("nan"),
    }
    res.update(fanout.latency_summary(lat))
    await probe.settle()
    return res


async def run_all(
    host: str,
    port: int,
    pid: int | None,
    clients: int = 200,
    seconds: float = 15.0,
    rates: tuple[float, ...] = (1.0, 100.0),
    docs: int = 100,
    modes: tuple[str, ...] = MODES,
    interval: float = 1.0,
    log=print,
    warmup: bool = True,
    before_each=None,
) -> list[dict]:
    """Every (rate, mode) pair, each on a collection of its own, seeded afresh.

    First a short unrecorded run of each mode, so that first-use costs (imports, allocations,
    caches) do not land in the first measured run.
    """
    for mode in modes if warmup else ():
        plan = Plan(host, port, f"pollwarm{_time_ns() % 1_000_000}", mode, 20.0, 1.0, 20, docs, pid=pid)
        await run_one(plan)
    out = []
    n = 0
    for rate in rates:
        for mode in modes:
            n += 1
            plan = Plan(
                host=host,
                port=port,
                pid=pid,
                collection=f"poll{n}x{_time_ns() % 1_000_000}",
                mode=mode,
                rate=rate,
                seconds=seconds,
                clients=clients,
                docs=docs,
                interval=interval,
            )
            if before_each is not None:
                before_each()  # e.g. wait for a quiet machine; nothing is open between runs
            t0 = time.monotonic()
            try:
                r = await run_one(plan)
            except Exception as e:
                r = {"mode": mode, "rate": rate, "error": f"{type(e).__name__}: {e}"[:300]}
            r["run_s"] = time.monotonic() - t0
            log(f"  {_rate(r)}, {MODE_LABEL[mode]}: {brief(r)}")
            out.append(r)
    return out


# ---------------------------------------------------------------- report


def brief(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    return (
        f"cpu={r['server_cpu_s']:.2f}s requests={r['requests']:,} bytes={r['bytes_to_clients']:,} "
        f"p50={r['p50_ms']:.3g}ms p99={r['p99_ms']:.3g}ms delivered={r['delivered']:,}/{r['expected']:,} "
        f"generator={r['generator_cpu_util']:.0%} run={r['run_s']:.1f}s"
    )


def _ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            v = n / size
            return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n:.0f} B"


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return "\n".join(lines)


def _rate(r: dict) -> str:
    return f"{r['rate']:g} write/s" if r["rate"] == 1 else f"{r['rate']:g} writes/s"


def _how(r: dict) -> str:
    if r["mode"] == "poll":
        return f"polling the list every {r.get('interval', 1):g} s"
    return "watching (one SSE stream each)"


def table(results: list[dict]) -> str:
    head = [
        "changes",
        "clients stay fresh by",
        "server CPU (share of a core)",
        "HTTP requests served (polls + writes)",
        "bytes to clients (per second)",
        "staleness p50 / p99",
    ]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([_rate(r), MODE_LABEL[r["mode"]], f"error: {r['error']}", "", "", ""])
            continue
        note = ""
        if r["delivered"] < r["expected"]:
            note = f" ({r['delivered'] / r['expected']:.0%} delivered)"
        rows.append(
            [
                _rate(r),
                _how(r),
                f"{r['server_cpu_s']:.2f} s ({r['server_cpu_util']:.0%})",
                f"{r['polls_done']:,} + {r['writes_done']:,}",
                f"{_bytes(r['bytes_to_clients'])} ({_bytes(r['bytes_to_clients'] / r['wall_s'])}/s)",
                f"{_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} ms{note}",
            ]
        )
    return _md(head, rows)


def details(results: list[dict]) -> str:
    head = [
        "changes",
        "mode",
        "writes done / planned",
        "polls done / planned (late)",
        "delivered / expected",
        "within the interval",
        "staleness max",
        "server CPU busy",
        "generator CPU busy",
        "other CPU busy",
    ]
    rows = []
    for r in results:
        if "error" in r:
            continue
        poll = r["mode"] == "poll"
        rows.append(
            [
                _rate(r),
                MODE_LABEL[r["mode"]],
                f"{r['writes_done']:,} / {r['writes']:,}",
                f"{r['polls_done']:,} / {r['polls_target']:,.0f} ({r['polls_late']:,})" if poll else "-",
                f"{r['delivered']:,} / {r['expected']:,}",
                f"{r['within_interval']:.1%}",
                f"{_ms(r['max_ms'])} ms",
                f"{r['server_cpu_util']:.0%}",
                f"{r['generator_cpu_util']:.0%}",
                f"{r['other_cpu_util']:.0%}",
            ]
        )
    return _md(head, rows)


def ratios(results: list[dict]) -> list[tuple[float, float, float, float]]:
    """(rate, CPU polling/watching, bytes polling/watching, requests polling/watching) per rate."""
    by = {(r["rate"], r["mode"]): r for r in results if "error" not in r}
    out = []
    for rate in sorted({r["rate"] for r in results}):
        p, w = by.get((rate, "poll")), by.get((rate, "watch"))
        if p and w:
            out.append(
                (
                    rate,
                    p["server_cpu_s"] / max(w["server_cpu_s"], 1e-9),
                    p["bytes_to_clients"] / max(w["bytes_to_clients"], 1),
                    p["requests"] / max(w["requests"], 1),
                )
            )
    return out


def _times(x: float) -> str:
    return f"{x:.2f}x" if x < 1 else f"{x:.1f}x" if x < 10 else f"{x:.0f}x"


def _span(xs: list[float]) -> str:
    lo, hi = _ms(min(xs)), _ms(max(xs))
    return lo if lo == hi else f"{lo}-{hi}"


def summary(results: list[dict]) -> str:
    """What the table shows, in a few sentences, from its own figures."""
    rs = ratios(results)
    if not rs:
        return ""
    ok = [r for r in results if "error" not in r]
    by = {(r["rate"], r["mode"]): r for r in ok}
    clients, docs, interval = ok[0]["clients"], ok[0]["docs"], ok[0]["interval"]
    parts = [
        f"at {rate:g} write{'s' if rate != 1 else ''}/s polling uses {_times(c)} the server CPU and "
        f"{_times(b)} the bytes of watching"
        for rate, c, b, _ in rs
    ]
    polls = [r for r in ok if r["mode"] == "poll"]
    watches = [r for r in ok if r["mode"] == "watch"]
    out = f"To keep {clients} clients within {interval:g} s of fresh: " + "; ".join(parts) + "."
    if polls and watches:
        out += (
            f" Polling clients are {_span([r['p50_ms'] for r in polls])} ms behind at the median "
            f"(half the poll interval, by construction; p99 up to "
            f"{_ms(max(r['p99_ms'] for r in polls))} ms), watching clients "
            f"{_span([r['p50_ms'] for r in watches])} ms (p99 up to "
            f"{_ms(max(r['p99_ms'] for r in watches))} ms)."
        )
    lo, hi = rs[0], rs[-1]
    p_lo, p_hi, w_hi = by.get((lo[0], "poll")), by.get((hi[0], "poll")), by.get((hi[0], "watch"))
    if len(rs) > 1 and p_lo and p_hi and w_hi and p_hi["polls_done"] and w_hi["delivered"]:
        per_poll = p_hi["bytes_to_clients"] / p_hi["polls_done"]
        per_event = w_hi["bytes_to_clients"] / w_hi["delivered"]
        flat = p_hi["server_cpu_s"] < 1.5 * p_lo["server_cpu_s"]
        out += (
            f" Polling {'costs about the same whatever the change rate' if flat else 'costs'}: every "
            f"client fetches the whole list (~{per_poll / 1000:.0f} KB) every interval, changed or "
            f"not; watching costs per change delivered (~{per_event:.0f} bytes per change per "
            "client, every change its own event)."
        )
        if hi[1] < 1.5 <= lo[1]:
            out += (
                f" So watching wins by far when changes are rare and loses its edge in CPU and "
                f"bytes once every document changes about once per poll interval ({hi[0]:g} "
                f"writes/s on {docs} documents), while its clients stay milliseconds fresh."
            )
    return out


def section(results: list[dict], level: str = "##") -> str:
    """The Markdown section run.py puts into docs/benchmarks.md (and main() prints)."""
    ok = [r for r in results if "error" not in r]
    if ok:
        r = ok[0]
        setup = (
            f"{r['clients']} clients, a collection of {r['docs']} documents of ~100 bytes (the list "
            f"is one page), {r['seconds']:g} s per run, all runs on one fresh watchroute. Polling: "
            f"each client `GET /v1/{{c}}` every {r['interval']:g} s on a keep-alive connection, "
            "the clients spread evenly over the interval. Watching: one SSE watch per client, "
            "opened before the run (those requests are not counted). Requests, bytes and CPU are "
            "over the run; staleness is, for every write and every client, the time until the "
            "client had that write (or a later one to the same document). Details in "
            "`bench/README.md`."
        )
    else:
        setup = "No run completed."
    parts = [f"{level} Watch versus polling", "", setup, "", table(results)]
    s = summary(results)
    if s:
        parts += ["", s]
    parts += ["", f"{level}# Details", details(results)]
    warn = warnings(results)
    if warn:
        parts += ["", f"{level}# Warnings", *[f"- {w}" for w in warn]]
    return "\n".join(parts)


def warnings(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        if "error" in r:
            continue
        name = f"{_rate(r)}, {MODE_LABEL[r['mode']]}"
        if r["generator_cpu_util"] > 0.85:
            out.append(f"{name}: the load generator was {r['generator_cpu_util']:.0%} busy, maybe the limit.")
        if r["other_cpu_util"] > 0.25:
            out.append(
                f"{name}: other processes kept {r['other_cpu_util']:.0%} of a core busy; run again on a "
                "quiet machine."
            )
        if r["writes_done"] < 0.95 * r["writes"]:
            out.append(f"{name}: only {r['writes_done']:,} of {r['writes']:,} writes answered in the run.")
        if r["mode"] == "poll" and r["polls_done"] < 0.95 * r["polls_target"]:
            out.append(
                f"{name}: only {r['polls_done']:,} of {r['polls_target']:,.0f} polls were answered: "
                "the server could not keep up with the poll rate."
            )
        if r["delivered"] < r["expected"]:
            out.append(f"{name}: {r['expected'] - r['delivered']:,} (write, client) pairs never arrived.")
        if r.get("poll_errors") or r.get("write_errors"):
            out.append(f"{name}: {r['poll_errors']} poll errors, write errors {r['write_errors']}.")
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", required=True, help="watchroute base URL, e.g. http://127.0.0.1:9100")
    ap.add_argument("--pid", type=int, help="server pid, for its CPU")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, help="per run (default 15; 5 with --quick)")
    ap.add_argument("--rates", default="1,100", help="writes/s, comma list (default 1,100)")
    ap.add_argument("--docs", type=int, default=100, help="documents in the collection (100)")
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval = freshness bound (1 s)")
    ap.add_argument("--modes", default="poll,watch")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    host, port = fanout.loopback(ap, a.url)
    modes = tuple(m.strip() for m in a.modes.split(","))
    if not set(modes) <= set(MODES):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    fanout.raise_nofile(a.clients + 1000)
    res = fanout.run(
        run_all(
            host,
            port,
            a.pid,
            clients=a.clients,
            seconds=a.seconds or (5.0 if a.quick else 15.0),
            rates=tuple(float(x) for x in a.rates.split(",")),
            docs=a.docs,
            modes=modes,
            interval=a.interval,
        )
    )
    print()
    print(section(res))


if __name__ == "__main__":
    main()
