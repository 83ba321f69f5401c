"""`Client`: the same API as `AsyncClient`, blocking.

It is the async client, run on a private event loop in a daemon thread: one implementation of
the protocol, retries and resume logic, not two that drift apart. Each call hands a coroutine
to that loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from ._async import AsyncClient
from ._watch import AsyncWatch, OnExpired, Transport
from .backoff import Backoff
from .events import BatchResult, Resource, ResourceList, WatchEvent
from .live import BlockingLiveCollection

T = TypeVar("T")


class Client:
    """A blocking client of one watchroute server (see `AsyncClient` for the semantics)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="watchroute-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(url, timeout=timeout, headers=headers)

        self.aclient = self.run(make())
        self.url = self.aclient.url

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            future.cancel()
            raise

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        """What `asyncio.run` does before it closes its loop: end what is still running there
        (watches not closed, generators left to the garbage collector), then close the client."""
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self.aclient.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, collection: str, id: str) -> Resource:
        return self.run(self.aclient.get(collection, id))

    def list(
        self,
        collection: str,
        *,
        filter: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ResourceList:
        return self.run(self.aclient.list(collection, filter=filter, limit=limit, continue_=continue_))

    def create(self, collection: str, data: dict[str, Any]) -> Resource:
        return self.run(self.aclient.create(collection, data))

    def put(
        self,
        collection: str,
        id: str,
        data: dict[str, Any],
        *,
        if_match: int | str | None = None,
        create_only: bool = False,
    ) -> Resource:
        return self.run(self.aclient.put(collection, id, data, if_match=if_match, create_only=create_only))

    def patch(
        self,
        collection: str,
        id: str,
        patch: dict[str, Any] | list[dict[str, Any]],
        *,
        if_match: int | str | None = None,
    ) -> Resource:
        return self.run(self.aclient.patch(collection, id, patch, if_match=if_match))

    def delete(self, collection: str, id: str, *, if_match: int | str | None = None) -> Resource:
        return self.run(self.aclient.delete(collection, id, if_match=if_match))

    def batch(self, ops: list[dict[str, Any]]) -> BatchResult:
        return self.run(self.aclient.batch(ops))

    def watch(
        self,
        collection: str,
        id: str | None = None,
        *,
        since: int | None = None,
        filter: str | None = None,
        initial: bool = False,
        transport: Transport = "sse",
        on_expired: OnExpired = "raise",
        heartbeat: float = 15.0,
        backoff: Backoff | None = None,
    ) -> Watch:
        """`for event in client.watch(...)`: see `AsyncClient.watch`."""
        awatch = self.aclient.watch(
            collection,
            id,
            since=since,
            filter=filter,
            initial=initial,
            transport=transport,
            on_expired=on_expired,
            heartbeat=heartbeat,
            backoff=backoff,
        )
        return Watch(self, awatch)

    def live(self, collection: str, **options: Any) -> BlockingLiveCollection:
        """A LiveCollection run on this client's loop thread (see `LiveCollection`)."""
        return BlockingLiveCollection(self, collection, **options)


class Watch(Iterator[WatchEvent]):
    """A blocking iterator over an `AsyncWatch`."""

    def __init__(self, client: Client, awatch: AsyncWatch) -> None:
        self._client = client
        self.awatch = awatch

    @property
    def revision(self) -> int | None:
        return self.awatch.revision

    @property
    def reconnects(self) -> int:
        return self.awatch.reconnects

    def __next__(self) -> WatchEvent:
        try:
            return self._client.run(self.awatch.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        # After an interrupted `next`, the generator may still be unwinding its cancellation.
        with contextlib.suppress(RuntimeError):
            self._client.run(self.awatch.aclose())

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
