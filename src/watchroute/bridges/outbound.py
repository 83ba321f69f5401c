"""The OUT runner: a collection's changes, in revision order, published to a broker.

The runner is a cursor over the log, like a watcher (core/watcher.py): `cursor` is the revision
up to which every change of the collection has been published and accepted, or found not to
concern the bridge. The filter is applied with membership as a watch applies it: a document
that starts matching is ADDED, one that stops is DELETED (carrying its new state).

Resuming: from the newest of the stored cursor (`store.position("bridge:NAME")`, stored after
each accepted batch), the broker's own record of the last revision it took
(`sink.last_accepted()`: JetStream's last message id, Redis' last entry id) and what this
process saw accepted before a reconnect. Where the broker keeps that record, a restart neither
loses nor repeats; elsewhere what was accepted after the last stored cursor is published again
(at least once: docs/bridges.md). A new bridge starts at the revision it was created at.

Past the history horizon (the log compacted beyond the cursor, after a long outage), the
changes in between are gone: the runner says so (a WARNING, the status' error,
`restarts_from_now`) and goes on from the log's head.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from watchroute.bridges.base import Sink
from watchroute.bridges.config import masked_url
from watchroute.bridges.state import RUNNING, Bridge
from watchroute.core.filter import compile_filter
from watchroute.core.problems import Problem
from watchroute.core.watcher import Watcher
from watchroute.wire.events import event_json

log = logging.getLogger("watchroute")

BATCH = 256  # changes read per pass; the cursor is stored once per accepted batch
IDLE_SECONDS = 0.02  # how often an idle runner looks at the log again
# An idle runner's cursor moves with other collections' commits: stored at most this often.
IDLE_STORE_SECONDS = 1.0


def start_cursor(bridge: Bridge, stored: str | None, accepted: int | None) -> int:
    """Where the runner resumes: after everything known to have been accepted."""
    candidates = [bridge.since, bridge.accepted]
    if stored:
        candidates.append(int(stored))
    if accepted is not None:
        candidates.append(accepted)
    return max(candidates)


def headers_of(bridge: Bridge, kind: str, revision: int, id: str) -> dict[str, str]:
    return {
        "Watchroute-Bridge": bridge.name,
        "Watchroute-Collection": bridge.config.collection,
        "Watchroute-Id": id,
        "Watchroute-Type": kind,
        "Watchroute-Revision": str(revision),
    }


async def run_outbound(bridge: Bridge, sink: Sink, runtime: Any) -> None:
    """Publish the collection's changes for ever; raises BridgeDown when the broker goes away
    (the manager reconnects with capped backoff), returns only when cancelled."""
    store = runtime.store
    state = bridge.state
    config = bridge.config
    flt = compile_filter(config.filter) if config.filter else None
    stored = await store.position(bridge.position_name)
    cursor = start_cursor(bridge, stored, await sink.last_accepted())
    state.position = str(cursor)
    state.to(RUNNING)
    log.info(
        "bridge %s publishes %s to %s from revision %d",
        bridge.name,
        config.collection,
        masked_url(config.destination),
        cursor,
    )
    kept = cursor  # the cursor as stored
    kept_at = time.monotonic()
    watcher = Watcher(runtime.hub, runtime.window, store, config.collection, None, flt, cursor)
    # Optional beside the Sink protocol: publish a batch, in order, returning once all of it is
    # accepted (JetStream pipelines the acknowledgements).
    publish_many = getattr(sink, "publish_many", None)
    while True:
        try:
            events = await watcher.next(BATCH, 0)  # what is ready; never waits
        except Problem as problem:
            if problem.status != 410:
                raise
            watcher.cursor = _past_horizon(bridge, watcher.cursor, store.revision)
            continue
        if events and publish_many is not None:  # a sink that takes a batch in one round trip
            await publish_many(
                [(c.revision, event_json(c, k), headers_of(bridge, k, c.revision, c.id)) for k, c in events]
            )
            bridge.accepted = events[-1][1].revision
            state.published += len(events)
        else:
            for kind, change in events:
                await sink.publish(
                    change.revision,
                    event_json(change, kind),
                    headers_of(bridge, kind, change.revision, change.id),
                )
                bridge.accepted = change.revision
                state.published += 1
        state.position = str(watcher.cursor)
        now = time.monotonic()
        if watcher.cursor != kept and (events or now - kept_at >= IDLE_STORE_SECONDS):
            await store.write([], (bridge.position_name, str(watcher.cursor)))
            kept, kept_at = watcher.cursor, now
        if not events:
            await asyncio.sleep(IDLE_SECONDS)


def _past_horizon(bridge: Bridge, cursor: int, head: int) -> int:
    error = (
        f"the log was compacted past revision {cursor} before it was published: changes up to "
        f"revision {head} were not published; going on from there"
    )
    log.warning("bridge %s: %s", bridge.name, error)
    bridge.state.failed(error)
    bridge.state.restarts_from_now += 1
    bridge.accepted = head
    return head
