"""The bridges of one instance: configurations followed from the store, one runner per bridge.

Configurations are the resources `_bridges/{name}` (and, apart, `_bridge_secrets/{name}`),
written through the store like schemas, so every process of every instance reads the same ones:
each reads them at start, then follows `_bridges` with a cursor of its own. For each bridge it
keeps a supervisor that takes the bridge's leadership (leader.py) and, while it holds it, runs
the bridge: the OUT runner (outbound.py) or the IN runner (inbound.py). A configuration change
restarts the supervisor; a removal stops it.

The leader stores its status beside the bridge's position (state.py), so that every instance
answers `GET /v1/_bridges` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client.core import Metric

from watchroute.bridges.base import BridgeDown
from watchroute.bridges.config import BridgeConfig
from watchroute.bridges.engines import sink_for, source_for
from watchroute.bridges.inbound import run_inbound
from watchroute.bridges.leader import leadership_for
from watchroute.bridges.outbound import run_outbound
from watchroute.bridges.state import FAILED, PAUSED, RUNNING, STANDBY, Bridge, status_name
from watchroute.bridges.status_metrics import bridge_families
from watchroute.core.problems import Problem

log = logging.getLogger("watchroute")

BRIDGES = "_bridges"  # the reserved collection of configurations: id = the bridge's name
SECRETS = "_bridge_secrets"  # their secrets: no route reads this collection
FOLLOW_SECONDS = 0.2  # how often each process reads what changed in `_bridges`
LEADER_RETRY_SECONDS = 1.0  # a standby asks for the leadership again this often
LEADER_CHECK_SECONDS = 2.0  # the leader checks it still holds its lock this often
BACKOFF_FIRST = 0.5  # the wait after a broker first fails, doubled after each failure...
BACKOFF_MOST = 30.0  # ...up to this
END_RETRY_SECONDS = 0.5  # a runner still going after it was cancelled is cancelled again this often
STATUS_SECONDS = 1.0  # how often a leader stores its status when it changed


class BridgeManager:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.bridges: dict[str, Bridge] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._follower: asyncio.Task[None] | None = None
        self._status: asyncio.Task[None] | None = None
        self._stored_status: dict[str, str] = {}
        # One refresh at a time: the PUT route and the follower both refresh a bridge just set, and
        # two at once would each find no runner and start one (the second, without the lock the
        # first holds, left in standby for ever).
        self._refreshing = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        cursor = await self._load()
        self._follower = asyncio.create_task(self._follow(cursor), name="watchroute-bridges")
        self._status = asyncio.create_task(self._store_status_forever(), name="watchroute-bridge-status")

    async def stop(self) -> None:
        for task in (self._follower, self._status):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for name in list(self._supervisors):
            await self._stop_bridge(name)

    # -- following the configurations ------------------------------------------------------------

    async def _load(self) -> int:
        """Read every configuration; return the revision they were read at."""
        store = self.runtime.store
        after: str | None = None
        first: int | None = None
        present: set[str] = set()
        while True:
            page = await store.list(BRIDGES, None, 1000, after)
            first = page.revision if first is None else first
            for row in page.rows:
                present.add(row.id)
                await self.refresh(row.id)
            if page.next_after_id is None:
                break
            after = page.next_after_id
        for gone in [name for name in self.bridges if name not in present]:
            await self._stop_bridge(gone)
        return first

    async def _follow(self, cursor: int) -> None:
        from watchroute.core.watcher import Watcher

        runtime = self.runtime
        failing = False
        while True:
            watcher = Watcher(runtime.hub, runtime.window, runtime.store, BRIDGES, None, None, cursor)
            try:
                while True:
                    names = {change.id for _, change in await watcher.next(64, 0)}
                    for name in sorted(names):
                        await self.refresh(name)
                    cursor = watcher.cursor
                    failing = False
                    await asyncio.sleep(FOLLOW_SECONDS)
            except Problem as problem:
                if problem.status == 410:  # behind the history horizon: read them all again
                    with contextlib.suppress(Exception):
                        cursor = await self._load()
                        continue
            except Exception as exc:
                if not failing:
                    log.warning("the bridge configurations could not be read (%s); trying again", exc)
                failing = True
            await asyncio.sleep(1.0)

    async def refresh(self, name: str) -> None:
        """Bring bridge `name` in line with the store: start, restart or stop its runner."""
        async with self._refreshing:
            await self._refresh(name)

    async def _refresh(self, name: str) -> None:
        store = self.runtime.store
        row = await store.get(BRIDGES, name)
        current = self.bridges.get(name)
        if row is None:
            if current is not None:
                await self._stop_bridge(name)
            return
        if current is not None and current.revision >= row.revision:
            return
        secret = await store.get(SECRETS, name)
        body = {k: v for k, v in row.data.items() if k != "secret_set"}
        if secret is not None:
            body.update(secret.data)  # `secret`, and the URL with its password
        try:
            config = BridgeConfig.model_validate(body)
        except ValueError as exc:  # checked when it was set: only a newer release refuses it
            log.error("bridge %s: its stored configuration is refused: %s", name, exc)
            return
        if current is not None:
            await self._stop_bridge(name)
        bridge = Bridge(name, config, row.revision, row.created_revision, check=self._check_of())
        self.bridges[name] = bridge
        self._supervisors[name] = asyncio.create_task(
            self._supervise(bridge), name=f"watchroute-bridge-{name}"
        )

    def _check_of(self) -> Any:
        schemas = getattr(self.runtime, "schemas", None)
        return None if schemas is None else schemas.check

    async def _stop_bridge(self, name: str) -> None:
        task = self._supervisors.pop(name, None)
        self.bridges.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- running one bridge ----------------------------------------------------------------------

    async def _supervise(self, bridge: Bridge) -> None:
        """Lead the bridge when no other instance does, and run it while leading."""
        lead = leadership_for(self.runtime.store, bridge.name)
        try:
            while True:
                if not await lead.acquire():
                    bridge.state.to(STANDBY)
                    await asyncio.sleep(LEADER_RETRY_SECONDS)
                    continue
                log.info("bridge %s: this instance leads it", bridge.name)
                runner = asyncio.create_task(self._run(bridge))
                try:
                    while not runner.done():
                        await asyncio.wait({runner}, timeout=LEADER_CHECK_SECONDS)
                        if not runner.done() and not await lead.held():
                            log.warning(
                                "bridge %s: lost its leadership; another instance takes it", bridge.name
                            )
                            break
                finally:
                    await _end(runner)
        finally:
            await lead.release()

    async def _run(self, bridge: Bridge) -> None:
        """Run the bridge; a broker that fails pauses it, retried with capped backoff."""
        state = bridge.state
        delay = BACKOFF_FIRST
        outage = False
        while True:
            try:
                if bridge.config.direction == "out":
                    await self._run_out(bridge)
                else:
                    await self._run_in(bridge)
                return
            except BridgeDown as exc:
                if state.state == RUNNING:
                    delay = BACKOFF_FIRST  # it had recovered: a new outage starts short
                state.failed(str(exc))
                state.to(PAUSED)
                if not outage or state.errors == 1:
                    log.warning("bridge %s paused: %s; retrying with backoff", bridge.name, exc)
                outage = True
            except NotImplementedError as exc:
                state.failed(str(exc))
                state.to(FAILED)
                log.error("bridge %s cannot run: %s", bridge.name, exc)
                delay = BACKOFF_MOST
            except Exception as exc:
                state.failed(f"{type(exc).__name__}: {exc}")
                state.to(FAILED)
                log.exception("bridge %s failed; retrying with backoff", bridge.name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MOST)

    async def _run_out(self, bridge: Bridge) -> None:
        sink = sink_for(bridge.name, bridge.config)
        if hasattr(sink, "deliveries"):  # webhooks log their deliveries: kept across reconnects
            sink.deliveries = bridge.state.deliveries
        try:
            await sink.connect()
            await run_outbound(bridge, sink, self.runtime)
        finally:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _run_in(self, bridge: Bridge) -> None:
        source = source_for(bridge.name, bridge.config)
        try:
            await source.connect()
            bridge.state.to(RUNNING)
            await run_inbound(bridge, source, self.runtime.store)
        finally:
            with contextlib.suppress(Exception):
                await source.close()

    # -- status ----------------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        """`watchroute_bridge_*` for /metrics, labelled `bridge`: this instance's view of each
        bridge; the figures of the one that leads it (`watchroute_bridge_leader` 1) are the
        bridge's."""
        return bridge_families(self.bridges.values(), self.runtime.store.revision)

    async def _store_status_forever(self) -> None:
        while True:
            await asyncio.sleep(STATUS_SECONDS)
            for bridge in list(self.bridges.values()):
                if bridge.state.state == STANDBY:
                    continue
                encoded = bridge.state.encode()
                if self._stored_status.get(bridge.name) == encoded:
                    continue
                try:
                    await self.runtime.store.write([], (status_name(bridge.name), encoded))
                    self._stored_status[bridge.name] = encoded
                except Exception as exc:  # the store away for a moment: stored on the next pass
                    log.debug("bridge %s: status not stored: %s", bridge.name, exc)

    async def status(self, name: str) -> dict[str, Any]:
        """Bridge `name`'s status: this instance's when it leads it, else the leader's as stored."""
        store = self.runtime.store
        bridge = self.bridges.get(name)
        if bridge is not None and bridge.state.state != STANDBY:
            shown = bridge.state.to_dict()
            shown["deliveries"] = list(bridge.state.deliveries)
            shown["leader"] = True
        else:
            stored = await store.position(status_name(name))
            shown = orjson.loads(stored) if stored else {"state": STANDBY, "position": None}
            shown["leader"] = False
            if bridge is None:
                shown.setdefault("state", STANDBY)
        position = shown.get("position")
        if position is None:
            position = await store.position(f"bridge:{name}")
            shown["position"] = position
        out = bridge is None or bridge.config.direction == "out"
        shown["lag"] = max(0, store.revision - int(position)) if out and position else None
        return shown


async def _end(runner: asyncio.Task[None]) -> None:
    """Cancel a bridge's runner and wait until it has ended. A client library may take a
    cancellation that reaches it while it connects for a failed connection (aio-pika does), and the
    runner then goes on to its backoff: it is cancelled again until it ends, or the bridge being
    stopped would hold every later refresh (every PUT of `/v1/_bridges`) waiting for ever."""
    while not runner.done():
        runner.cancel()
        await asyncio.wait({runner}, timeout=END_RETRY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        runner.result()  # its errors were logged where they happened
