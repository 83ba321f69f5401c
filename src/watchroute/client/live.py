"""LiveCollection: a local copy of a collection kept current by list + watch (an informer).

The copy is a mapping id -> Resource at `revision`: it holds exactly the server's state at that
revision (for the filter given). It lists, then watches from the list's revision; the watch
survives restarts by resuming. When the server's history no longer reaches back to `revision`
(410), it lists again and reports the true differences between what it had and the new list:
`on_deleted` for what is gone, `on_added` for what is new, `on_modified` for what changed, and
nothing for what did not; a reset that reports everything again would make every consumer do
its work twice.

`format="patch"` and `conflate=True` are passed on to its watch. With patches the watch starts
from the copy (its `states`), so every patch applies to what the copy holds; should the watch
ever list again (RESYNC), the copy takes that listing the same way, with true differences.
With conflation a copy that fell behind skips the intermediate states and its callbacks see
only the newest one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import TYPE_CHECKING, Any

from watchroute.client.backoff import Backoff
from watchroute.client.errors import APIError, ConnectionFailed, Expired, ServerError
from watchroute.client.events import BOOKMARK, DELETED, RESYNC, Resource, WatchEvent
from watchroute.watch.heartbeat import HEARTBEAT_DEFAULT

if TYPE_CHECKING:
    from watchroute.client._async import AsyncClient
    from watchroute.client._sync import Client
    from watchroute.client._transports import Transport
    from watchroute.client._watch import Format

log = logging.getLogger("watchroute.client")

# on_added(resource), on_modified(old, new), on_deleted(last_state): plain or async.
Callback = Callable[..., Any]


class LiveCollection(Mapping[str, Resource]):
    def __init__(
        self,
        client: AsyncClient,
        collection: str,
        *,
        filter: str | None = None,
        transport: Transport = "sse",
        heartbeat: float = HEARTBEAT_DEFAULT,
        on_added: Callback | None = None,
        on_modified: Callback | None = None,
        on_deleted: Callback | None = None,
        backoff: Backoff | None = None,
        format: Format = "full",
        conflate: bool = False,
    ) -> None:
        self.client = client
        self.format: Format = format
        self.conflate = conflate
        self.collection = collection
        self.filter = filter
        self.transport = transport
        self.heartbeat = heartbeat
        self.on_added = on_added
        self.on_modified = on_modified
        self.on_deleted = on_deleted
        self.backoff = backoff or Backoff()
        # The copy. Private: the mapping's methods (`items()`, `values()`...) are the way in.
        self._items: dict[str, Resource] = {}
        self.revision: int | None = None  # the copy is the server's state at this revision
        self.relists = 0  # listings after the first (each after a 410)
        self.error: Exception | None = None  # what stopped it, when not stop()
        self._synced = asyncio.Event()
        self._advanced = asyncio.Event()  # set and replaced whenever `revision` moves
        self._task: asyncio.Task[None] | None = None
        self._relisting: list[Resource] | None = None  # after a RESYNC, until its listing ends

    # -- the mapping (read-only: keys, values, items, get, len, iter, in come from Mapping) ----

    def __getitem__(self, id: str) -> Resource:
        return self._items[id]

    def __contains__(self, id: object) -> bool:
        return id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def synced(self) -> bool:
        """True once the first listing is in."""
        return self._synced.is_set()

    # -- running -----------------------------------------------------------------------------

    def start(self) -> LiveCollection:
        """Start listing and watching in the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"live-{self.collection}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> LiveCollection:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first listing; False on timeout. Raises what stopped the collection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._until(lambda: self.synced)
        self._raise_error()
        return self.synced

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:
        """Wait until the copy is at `revision` or later (e.g. a write's); False on timeout."""

        def reached() -> bool:
            return self.revision is not None and self.revision >= revision

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._until(reached)
        self._raise_error()
        return reached()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition() and self.error is None:
            await self._advanced.wait()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _advance(self, revision: int) -> None:
        self.revision = revision
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    page = await self.client.list(self.collection, filter=self.filter)
                except (ConnectionFailed, APIError) as exc:
                    # "Later" (429, 503...) is retried, after at least its Retry-After; any
                    # other refusal (a bad filter...) stops the collection.
                    if isinstance(exc, APIError) and not (exc.retriable or isinstance(exc, ServerError)):
                        raise
                    delay = self.backoff.next_delay(getattr(exc, "retry_after", 0.0))
                    log.info("live %s: listing failed (%s); again in %.2fs", self.collection, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self.backoff.reset()
                await self._replace(page.items, page.revision)
                watch = self.client.watch(
                    self.collection,
                    since=page.revision,
                    filter=self.filter,
                    transport=self.transport,
                    heartbeat=self.heartbeat,
                    backoff=self.backoff,
                    format=self.format,
                    conflate=self.conflate,
                    states=page.items if self.format == "patch" else None,
                )
                try:
                    async with watch:
                        async for event in watch:
                            await self._apply(event)
                except Expired:
                    self.relists += 1
                    log.info("live %s: history expired at %s; listing again", self.collection, self.revision)
        except Exception as exc:  # a refusal that retrying cannot fix (a bad filter...)
            log.error("live %s stopped: %s", self.collection, exc)
            self.error = exc
            self._advanced.set()

    async def _replace(self, listed: list[Resource], revision: int) -> None:
        """Take a listing; report what differs from the copy (nothing, the first time, but
        additions)."""
        fresh = {r.id: r for r in listed}
        for id in [id for id in self._items if id not in fresh]:
            await self._emit(self.on_deleted, self._items.pop(id))
        for id, resource in fresh.items():
            old = self._items.get(id)
            self._items[id] = resource
            if old is None:
                await self._emit(self.on_added, resource)
            elif old.revision != resource.revision:
                await self._emit(self.on_modified, old, resource)
        self._advance(revision)
        self._synced.set()

    async def _apply(self, event: WatchEvent) -> None:
        if event.type == RESYNC:
            self._relisting = []
            return
        if self._relisting is not None:
            if event.initial and event.object is not None:
                self._relisting.append(event.object)
            elif event.initial_events_end and event.revision is not None:
                listed, self._relisting = self._relisting, None
                await self._replace(listed, event.revision)
            return
        resource = event.object
        if event.type == BOOKMARK or resource is None:
            if event.revision is not None:
                self._advance(event.revision)
            return
        if event.type == DELETED:
            old = self._items.pop(resource.id, None)
            self._advance(event.revision or resource.revision)
            if old is not None:
                await self._emit(self.on_deleted, resource)
            return
        old = self._items.get(resource.id)
        self._items[resource.id] = resource
        self._advance(event.revision or resource.revision)
        if old is None:
            await self._emit(self.on_added, resource)
        else:
            await self._emit(self.on_modified, old, resource)

    async def _emit(self, callback: Callback | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # one consumer's bug must not stop the copy
            log.exception("live %s: callback %r failed", self.collection, callback)


class BlockingLiveCollection(Mapping[str, Resource]):
    """A LiveCollection for the blocking `Client`: it runs on the client's event loop thread,
    where its callbacks are called too."""

    def __init__(self, client: Client, collection: str, **options: Any) -> None:
        self._client = client
        self.live = client._call(LiveCollection, client.aclient, collection, **options)

    def start(self) -> BlockingLiveCollection:
        self._client._call(self.live.start)
        return self

    def stop(self) -> None:
        self._client.run(self.live.stop())

    def __enter__(self) -> BlockingLiveCollection:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._client.run(self.live.wait_synced(timeout))

    def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:
        return self._client.run(self.live.wait_for_revision(revision, timeout))

    @property
    def revision(self) -> int | None:
        return self.live.revision

    @property
    def synced(self) -> bool:
        return self.live.synced

    def snapshot(self) -> dict[str, Resource]:
        """A copy of the mapping, taken on the loop thread (consistent at one revision)."""
        return self._client._call(dict, self.live._items)

    # The views are of a snapshot: ids and entries read at one revision, on the loop thread.
    # (Mapping's own views would take the ids there and read each entry later, here, when the
    # entry may be gone.)

    def keys(self) -> KeysView[str]:
        return self.snapshot().keys()

    def values(self) -> ValuesView[Resource]:
        return self.snapshot().values()

    def items(self) -> ItemsView[str, Resource]:
        return self.snapshot().items()

    def __getitem__(self, id: str) -> Resource:
        return self.live._items[id]  # one dict lookup: atomic

    def __contains__(self, id: object) -> bool:
        return id in self.live._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.live._items)
