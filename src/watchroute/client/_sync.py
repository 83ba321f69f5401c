"""`Client`: the same API as `AsyncClient`, blocking.

It is the async client, run on a private event loop in a daemon thread: one implementation of
the protocol, retries and resume logic, not two that drift apart. Each call hands a coroutine
to that loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

from watchroute.client._async import AsyncClient
from watchroute.client._watch import AsyncWatch, WatchOptions
from watchroute.client.events import WatchEvent
from watchroute.client.live import BlockingLiveCollection

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """`Client`'s version of an `AsyncClient` method: the same signature and docstring (so they
    are written once), run on the client's loop."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(method(self.aclient, *args, **kwargs))

    return call


class Client:
    """A blocking client of one watchroute server (see `AsyncClient` for the semantics)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="watchroute-client", daemon=True)
        self._thread.start()
        self.aclient = self._call(AsyncClient, url, timeout=timeout, headers=headers, verify=verify)
        self.url = self.aclient.url

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            future.cancel()
            raise

    def _call(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call a plain function on the client's loop thread and wait for its result: what
        belongs to the loop is made and touched there only."""

        async def call() -> T:
            return function(*args, **kwargs)

        return self.run(call())

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

    get = _blocking(AsyncClient.get)
    list = _blocking(AsyncClient.list)
    create = _blocking(AsyncClient.create)
    put = _blocking(AsyncClient.put)
    patch = _blocking(AsyncClient.patch)
    delete = _blocking(AsyncClient.delete)
    batch = _blocking(AsyncClient.batch)

    def watch(self, collection: str, id: str | None = None, **options: Unpack[WatchOptions]) -> Watch:
        """`for event in client.watch(...)`: see `AsyncClient.watch`."""
        return Watch(self, self.aclient.watch(collection, id, **options))

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
