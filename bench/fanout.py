"""Fan-out load generator: many SSE subscribers, one publisher, one server.

Built to cost the generator as little as possible, so that the server is what is measured:

* every subscriber is a bare ``asyncio.Protocol`` on uvloop (no HTTP client library per stream);
* a delivery is found by the marker ``"_t":`` that every published body carries, so only the
  bytes a delivery really needs are looked at: one ``bytes.count`` (non-recording subscribers) or
  one ``re.findall`` (recording subscribers) per socket read, whatever the SSE framing. Heartbeats
  (``: ping`` comments, BOOKMARK events), ``retry:`` lines and HTTP chunk-size lines carry no
  marker and are not counted;
* the publisher is one keep-alive raw HTTP/1.1 connection (a small pool in steady mode).

Every published body is a ~100-byte JSON object ``{"_t":<time.time_ns() at send>,"seq":N,"pad":..}``.
A subscriber that receives it computes write-to-receive latency as ``time_ns() at read - _t``.

Scenarios (each returns a plain dict):

* ``run_idle``: server RSS with K idle streams open minus RSS with none, divided by K.
* ``run_burst``: N subscribers, M events published one at a time (each waits for its HTTP
  response), until all N*M deliveries arrived: deliveries/s, latency p50/p99, server CPU per
  delivery (user+system of the server process and its descendants, via psutil).
* ``run_steady``: R writes/s for D seconds on a fixed schedule: latency p50/p99.

Usable on its own against a running server::

    .venv/bin/python bench/fanout.py --url http://127.0.0.1:9101 --pid PID burst
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil

try:
    import uvloop
except ImportError:  # pragma: no cover - the harness still runs, only slower
    uvloop = None

MARKER = b'"_t":'
_FIND_T = re.compile(rb'"_t": ?(\d+)').findall
_time_ns = time.time_ns

BODY_SIZE = 100


def send_stamp(due: int, now: int, waited: bool) -> int:
    """When an open-loop write counts as sent, for its latency: now, or its due time if it is
    late (it waited for a free connection, or more than 5 ms). Never before its due time: a
    timer may wake a little early, and a stamp before the run's start would make its deliveries
    look like leftovers of an earlier phase and go uncounted."""
    if waited or not 0 <= now - due <= 5_000_000:
        return due
    return now


def default_body(seq: int, t_ns: int) -> bytes:
    """A JSON object of BODY_SIZE bytes carrying the send timestamp under the marker key."""
    head = b'{"_t":%d,"seq":%d,"pad":"' % (t_ns, seq)
    return head + b"x" * max(0, BODY_SIZE - len(head) - 2) + b'"}'


@dataclass
class Target:
    """Where to subscribe and where to publish, and how to build a publish body."""

    name: str
    host: str = "127.0.0.1"
    port: int = 8000
    sub_path: str = "/sub"
    pub_path: str = "/pub"
    sub_headers: dict[str, str] = field(default_factory=lambda: {"Accept": "text/event-stream"})
    pub_content_type: str = "application/json"
    make_body: Callable[[int, int], bytes] = default_body
    pid: int | None = None  # server process (root of its process tree), for CPU and RSS

    @classmethod
    def from_url(cls, name: str, url: str, **kw) -> Target:
        u = urlsplit(url)
        return cls(name=name, host=u.hostname or "127.0.0.1", port=u.port or 80, **kw)

    def sub_request(self) -> bytes:
        lines = [f"GET {self.sub_path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.sub_headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def pub_request(self, body: bytes) -> bytes:
        return (
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (
                self.pub_path.encode(),
                self.host.encode(),
                self.port,
                self.pub_content_type.encode(),
                len(body),
            )
            + body
        )


# ---------------------------------------------------------------- server process probe


class ServerProbe:
    """CPU seconds and RSS of a server process and all its descendants (forked workers)."""

    def __init__(self, pid: int | None):
        self.root = psutil.Process(pid) if pid else None

    def _procs(self) -> list[psutil.Process]:
        if self.root is None:
            return []
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        """user+system seconds of the tree, reaped children included."""
        total = 0.0
        for i, p in enumerate(self._procs()):
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
            if i == 0:
                total += t.children_user + t.children_system
        return total

    def rss(self) -> int:
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    async def settle(self, quiet: float = 0.02, interval: float = 0.2, timeout: float = 5.0):
        """Wait until the server uses less than `quiet` of a core (earlier work is done)."""
        if self.root is None:
            await asyncio.sleep(interval)
            return
        deadline = time.monotonic() + timeout
        last = self.cpu()
        calm = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            now = self.cpu()
            calm = calm + 1 if now - last < quiet * interval else 0
            last = now
            if calm >= 2:
                return


def machine_busy() -> float:
    """CPU seconds all cores spent on anything but idling, since boot."""
    t = psutil.cpu_times()
    return (
        sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    )


# ---------------------------------------------------------------- subscribers


class Stats:
    """Shared counters of all subscribers of one scenario."""

    __slots__ = ("active", "count", "done", "goal", "last_ns", "lat", "min_t")

    def __init__(self):
        self.active = False
        self.count = 0
        self.goal = 1 << 62
        self.done: asyncio.Future | None = None
        self.last_ns = 0
        self.lat: list[int] = []
        self.min_t = 0  # deliveries stamped before this are leftovers of an earlier phase

    def arm(self, goal: int, min_t: int):
        self.count = 0
        self.goal = goal
        self.last_ns = 0
        self.lat = []
        self.min_t = min_t
        self.done = asyncio.get_running_loop().create_future()
        self.active = True

    def lower_goal(self, goal: int):
        """Fewer deliveries are due than armed for (a schedule given up early)."""
        self.goal = goal
        if self.count >= goal and self.done is not None and not self.done.done():
            self.done.set_result(None)


class StreamReader(asyncio.Protocol):
    """One streaming HTTP response, read raw: checks the status, then hands `lines` the body in
    whole lines only, so that a marker or a value split across reads is never lost."""

    __slots__ = ("carry", "closed", "head", "in_body", "ready", "req", "tr")

    def __init__(self, req: bytes):
        loop = asyncio.get_running_loop()
        self.req = req
        self.head = b""
        self.in_body = False
        self.carry = b""
        self.tr: asyncio.Transport | None = None
        self.ready = loop.create_future()
        self.closed = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.req)

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before headers: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes):
        if not self.in_body:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            status = self.head[:i].split(b"\r\n", 1)[0]
            data = self.head[i + 4 :]
            self.head = b""
            self.in_body = True
            parts = status.split(b" ", 2)
            if len(parts) < 2 or parts[1] != b"200":
                self.ready.set_exception(ConnectionError(f"stream answered {status!r}: {data[:200]!r}"))
                self.tr.close()
                return
            self.ready.set_result(None)
        if self.carry:
            data = self.carry + data
            self.carry = b""
        if not data:
            return
        if data[-1] != 10:
            j = data.rfind(b"\n")
            self.carry = data[j + 1 :]
            if j < 0:
                return
            data = data[: j + 1]
        self.lines(data)

    def lines(self, data: bytes) -> None:
        raise NotImplementedError


class Subscriber(StreamReader):
    """One SSE stream. Counts deliveries; if `record`, also keeps their latencies."""

    __slots__ = ("record", "stats")

    def __init__(self, stats: Stats, req: bytes, record: bool):
        super().__init__(req)
        self.stats = stats
        self.record = record

    def lines(self, data: bytes) -> None:
        st = self.stats
        if not st.active:
            return
        if self.record:
            found = _FIND_T(data)
            if not found:
                return
            now = _time_ns()
            min_t = st.min_t
            lat = [now - t for t in map(int, found) if t >= min_t]
            n = len(lat)
            if not n:
                return
            st.lat += lat
        else:
            n = data.count(MARKER)
            if not n:
                return
            now = _time_ns()
        st.count += n
        st.last_ns = now
        if st.count >= st.goal and not st.done.done():
            st.done.set_result(None)


R = TypeVar("R", bound=StreamReader)


async def open_subscribers(
    target: Target,
    n: int,
    stats: Stats,
    record_every: int = 1,
    concurrency: int = 200,
    timeout: float = 60.0,
) -> list[Subscriber]:
    """Open n streams and wait until every one got its response headers."""
    req = target.sub_request()
    return await open_readers(
        target.host,
        target.port,
        n,
        lambda i: Subscriber(stats, req, record_every > 0 and i % record_every == 0),
        concurrency,
        timeout,
    )


async def open_readers(
    host: str,
    port: int,
    n: int,
    make: Callable[[int], R],
    concurrency: int = 200,
    timeout: float = 60.0,
) -> list[R]:
    """Open n streams (`make(i)` reads the i-th) and wait until every one got its headers."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    readers: list[R] = []

    async def one(i: int):
        async with sem:
            _, p = await loop.create_connection(lambda: make(i), host, port)
            readers.append(p)
            await p.ready

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for t in tasks:
            t.cancel()
        await close_readers(readers)
        raise
    return readers


async def close_readers(readers: list[StreamReader], wait: float = 5.0):
    for r in readers:
        if r.tr is not None:
            r.tr.close()
    if readers:
        await asyncio.wait([asyncio.ensure_future(r.closed) for r in readers], timeout=wait)


# ---------------------------------------------------------------- publisher


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection: one request at a time, status returned."""

    def __init__(self):
        self.buf = b""
        self.waiter: asyncio.Future | None = None
        self.tr: asyncio.Transport | None = None
        self.lost = False

    @classmethod
    async def connect(cls, host: str, port: int) -> HttpConn:
        _, p = await asyncio.get_running_loop().create_connection(cls, host, port)
        return p

    def connection_made(self, tr):
        self.tr = tr

    def connection_lost(self, exc):
        self.lost = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"publisher connection lost: {exc}"))

    def request(self, raw: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.tr.write(raw)
        return self.waiter

    def data_received(self, data: bytes):
        self.buf += data
        while self.waiter is not None and not self.waiter.done():
            res = self._parse()
            if res is None:
                return
            status, close = res
            if close:
                self.lost = True
                self.tr.close()
            self.waiter.set_result(status)

    def _parse(self):
        buf = self.buf
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            return None
        lines = buf[:i].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif k == b"connection" and b"close" in v.lower():
                close = True
        pos = i + 4
        if status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False
        if chunked:
            while True:
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    return None
                size = int(buf[pos:j].split(b";")[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", j)  # no trailers expected
                    if end < 0:
                        return None
                    pos = end + 4
                    break
                pos = j + 2 + size + 2
                if pos > len(buf):
                    return None
        else:
            if len(buf) < pos + length:
                return None
            pos += length
        self.buf = buf[pos:]
        return status, close


class Publisher:
    """POSTs bodies on a keep-alive connection, reconnecting if the server closes it."""

    def __init__(self, target: Target):
        self.target = target
        self.conn: HttpConn | None = None

    async def post(self, body: bytes) -> int:
        if self.conn is None or self.conn.lost:
            self.conn = await HttpConn.connect(self.target.host, self.target.port)
        status = await self.conn.request(self.target.pub_request(body))
        if not 200 <= status < 300:
            raise RuntimeError(f"publish answered HTTP {status}")
        return status

    def close(self):
        if self.conn is not None and self.conn.tr is not None:
            self.conn.tr.close()


# ---------------------------------------------------------------- scenarios


def percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def latency_summary(lat: list[int]) -> dict:
    lat.sort()
    return {
        "latency_samples": len(lat),
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
    }


async def warmup(target: Target, subscribers: int = 10, events: int = 20, timeout: float = 20.0):
    """A few streams and events, so lazy imports and first-use allocations happen before measuring."""
    stats = Stats()
    subs = await open_subscribers(target, subscribers, stats, timeout=timeout)
    pub = Publisher(target)
    try:
        stats.arm(subscribers * events, 0)
        for i in range(events):
            await pub.post(target.make_body(i, _time_ns()))
        await asyncio.wait_for(asyncio.shield(stats.done), timeout)
    finally:
        pub.close()
        await close_readers(subs)


async def run_idle(target: Target, k: int, timeout: float = 120.0) -> dict:
    probe = ServerProbe(target.pid)
    await probe.settle()
    rss0 = probe.rss()
    stats = Stats()  # never armed: idle streams count nothing
    t0 = time.monotonic()
    subs = await open_subscribers(target, k, stats, record_every=0, timeout=timeout)
    opened_s = time.monotonic() - t0
    nofile = None
    if probe.root is not None:
        with contextlib.suppress(psutil.Error, AttributeError):
            nofile = probe.root.rlimit(psutil.RLIMIT_NOFILE)[0]
    try:
        await asyncio.sleep(1.0)
        await probe.settle()
        rss1 = probe.rss()
    finally:
        await close_readers(subs)
    await probe.settle()
    return {
        "idle_streams": k,
        "rss_before_mb": rss0 / 2**20,
        "rss_open_mb": rss1 / 2**20,
        "rss_per_stream_kb": (rss1 - rss0) / k / 1024,
        "open_s": opened_s,
        "server_nofile": nofile,  # the server's open-file limit (soft), as it ran
    }


async def run_burst(
    target: Target,
    subscribers: int = 1000,
    events: int = 1000,
    timeout: float = 120.0,
    record_every: int = 1,
) -> dict:
    probe = ServerProbe(target.pid)
    me = psutil.Process()
    stats = Stats()
    subs = await open_subscribers(target, subscribers, stats, record_every=record_every)
    pub = Publisher(target)
    try:
        await pub.post(target.make_body(-1, 0))  # opens the connection; stamped 0: not counted
        await probe.settle()
        goal = subscribers * events
        gc_was = gc.isenabled()
        gc.disable()
        t_start = _time_ns()
        stats.arm(goal, t_start)
        cpu0, gen0, all0 = probe.cpu(), sum(me.cpu_times()[:2]), machine_busy()
        first_ns = 0
        for seq in range(events):
            t = _time_ns()
            if not first_ns:
                first_ns = t
            await pub.post(target.make_body(seq, t))
        pub_end_ns = _time_ns()
        timed_out = False
        remaining = timeout - (pub_end_ns - first_ns) / 1e9
        try:
            await asyncio.wait_for(asyncio.shield(stats.done), max(0.1, remaining))
        except TimeoutError:
            timed_out = True
        cpu1, gen1, all1 = probe.cpu(), sum(me.cpu_times()[:2]), machine_busy()
        end_ns = stats.last_ns if not timed_out else _time_ns()
        if gc_was:
            gc.enable()
    finally:
        pub.close()
        await close_readers(subs)
    delivered = stats.count
    wall = max(1e-9, (end_ns - first_ns) / 1e9)
    res = {
        "subscribers": subscribers,
        "events": events,
        "expected": goal,
        "delivered": delivered,
        "timed_out": timed_out,
        "seconds": wall,
        "deliveries_per_s": delivered / wall,
        "publishes_per_s": events / max(1e-9, (pub_end_ns - first_ns) / 1e9),
        "server_cpu_s": cpu1 - cpu0,
        "cpu_us_per_delivery": (cpu1 - cpu0) / delivered * 1e6 if delivered else float("nan"),
        "server_cpu_util": (cpu1 - cpu0) / wall,
        "generator_cpu_util": (gen1 - gen0) / wall,
        # cores busy with anything else (other processes, interrupts): a noisy machine shows here
        "other_cpu_util": max(0.0, (all1 - all0) - (cpu1 - cpu0) - (gen1 - gen0)) / wall,
    }
    res.update(latency_summary(stats.lat))
    await probe.settle()
    return res


async def run_steady(
    target: Target,
    subscribers: int = 100,
    rate: float = 200.0,
    seconds: float = 10.0,
    max_conns: int = 16,
    record_every: int = 1,
    drain_timeout: float = 15.0,
    give_up_after: float = 2.0,
) -> dict:
    """Open-loop load: write k is due at start + k/rate, whatever happened to write k-1.

    Up to `max_conns` publish connections are used so a slow response does not hold back the
    schedule. A write sent on time carries its real send time; one that had to wait for a free
    connection carries its *due* time, so the server's slowness shows in the latency instead of
    silently lowering the rate (no coordinated omission).

    A server that has not taken every write after `give_up_after` times the planned duration
    cannot keep the rate: the rest of the schedule is not sent (it would only stretch the run,
    by minutes for the slowest peer), and the result says how many writes went out.
    """
    probe = ServerProbe(target.pid)
    me = psutil.Process()
    stats = Stats()
    subs = await open_subscribers(target, subscribers, stats, record_every=record_every)
    idle: list[Publisher] = []
    all_pubs: list[Publisher] = []
    free = asyncio.Condition()
    errors: list[str] = []
    try:
        p = Publisher(target)
        await p.post(target.make_body(-1, 0))
        idle.append(p)
        all_pubs.append(p)
        await probe.settle()
        total = int(rate * seconds)
        interval = 1e9 / rate
        start = _time_ns() + 20_000_000
        stats.arm(total * subscribers, _time_ns())  # every write is stamped later than this
        cpu0, gen0, all0 = probe.cpu(), sum(me.cpu_times()[:2]), machine_busy()
        late = 0
        sent = total
        give_up = start + int(give_up_after * seconds * 1e9)
        tasks = set()

        async def send(pub: Publisher, body: bytes):
            try:
                await pub.post(body)
            except Exception as e:  # reported, not fatal: the schedule goes on
                errors.append(repr(e))
            async with free:
                idle.append(pub)
                free.notify()

        for k in range(total):
            if _time_ns() > give_up:
                sent = k
                stats.lower_goal(sent * subscribers)
                break
            due = start + int(k * interval)
            delay = (due - _time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            waited = False
            if not idle and len(all_pubs) < max_conns:
                np_ = Publisher(target)
                all_pubs.append(np_)
                idle.append(np_)
            if not idle:
                waited = True
                async with free:
                    await free.wait_for(lambda: bool(idle))
            pub = idle.pop()
            now = _time_ns()
            stamp = send_stamp(due, now, waited)
            late += waited
            t = asyncio.ensure_future(send(pub, target.make_body(k, stamp)))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        sent_end = _time_ns()
        if tasks:
            await asyncio.wait(tasks)
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(stats.done), drain_timeout)
        except TimeoutError:
            timed_out = True
        cpu1, gen1, all1 = probe.cpu(), sum(me.cpu_times()[:2]), machine_busy()
        end_ns = _time_ns()
    finally:
        for p in all_pubs:
            p.close()
        await close_readers(subs)
    res = {
        "subscribers": subscribers,
        "rate": rate,
        "seconds": seconds,
        "achieved_rate": sent / max(1e-9, (sent_end - start) / 1e9),
        "planned": total,
        "sent": sent,
        "expected": sent * subscribers,
        "delivered": stats.count,
        "timed_out": timed_out,
        "late_writes": late,
        "publish_connections": len(all_pubs),
        "errors": errors[:3],
        "server_cpu_util": (cpu1 - cpu0) / max(1e-9, (end_ns - start) / 1e9),
        "generator_cpu_util": (gen1 - gen0) / max(1e-9, (end_ns - start) / 1e9),
        "other_cpu_util": max(0.0, (all1 - all0) - (cpu1 - cpu0) - (gen1 - gen0))
        / max(1e-9, (end_ns - start) / 1e9),
    }
    res.update(latency_summary(stats.lat))
    await probe.settle()
    return res


# ---------------------------------------------------------------- helpers for callers


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard if allowed) to at least `want`; returns the soft limit.

    Children started afterwards (the servers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()


def brief(r: dict, keys: tuple[str, ...]) -> str:
    """One progress line: `keys` of a scenario's result that it has, as k=v."""
    return ", ".join(f"{k}={r[k]:.3g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys if k in r)


def loopback(ap: argparse.ArgumentParser, url: str) -> tuple[str, int]:
    """(host, port) of `url`; a command-line error unless it is on this machine."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        ap.error("only loopback targets are allowed")
    return host, u.port or 80


def run(coro: Any) -> Any:
    """Run `coro` to its end on a fresh loop (uvloop when there is one)."""
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:9101")
    ap.add_argument("--sub", default="/sub", help="subscribe path (query allowed)")
    ap.add_argument("--pub", default="/pub", help="publish path")
    ap.add_argument("--pid", type=int, help="server pid, for CPU and RSS figures")
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--idle-streams", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--record-every", type=int, default=1, help="latency from every Kth stream")
    ap.add_argument("mode", choices=["burst", "steady", "idle"])
    a = ap.parse_args(argv)
    host, port = loopback(ap, a.url)
    t = Target(name=host, host=host, port=port, sub_path=a.sub, pub_path=a.pub, pid=a.pid)
    raise_nofile(max(a.subscribers, a.idle_streams) + 1000)
    if a.mode == "burst":
        coro = run_burst(t, a.subscribers, a.events, record_every=a.record_every)
    elif a.mode == "steady":
        coro = run_steady(t, a.subscribers, a.rate, a.seconds, record_every=a.record_every)
    else:
        coro = run_idle(t, a.idle_streams)
    res = run(coro)
    for k, v in res.items():
        print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
