"""Named positions kept with the log: what a bridge (or change capture) applied, stored in the
transaction of its writes, on both engines (store/base.py, Position)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watchroute.core.change import Change
from watchroute.core.problems import Problem
from watchroute.store import Store, WriteOp


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    if request.param == "sqlite":
        from watchroute.store.sqlite.engine import SQLiteStore

        yield lambda: SQLiteStore(str(tmp_path / "positions.db"))
        return
    from tests.support.postgres import fresh_database
    from watchroute.store.postgres import PostgresStore

    with fresh_database() as url:

        def make() -> Store:
            store = PostgresStore(url)
            store.migrate()
            return store

        yield make


def _ignore(changes: list[Change]) -> None:
    pass


def test_a_position_is_stored_with_its_writes_and_survives_a_reopen(make_store: Callable[[], Store]) -> None:
    async def run() -> None:
        store = make_store()
        await store.open(_ignore)
        assert await store.position("bridge:a") is None
        changes = await store.write([WriteOp("put", "sensors", "s1", {"t": 20})], ("bridge:a", "17"))
        assert [c.revision for c in changes] == [1]
        assert await store.position("bridge:a") == "17"
        # The position alone: no change, no revision taken.
        assert await store.write([], ("bridge:a", "18-0")) == []
        assert await store.write([], ("bridge:b", "5")) == []
        assert await store.committed_revision() == 1
        await store.close()

        store = make_store()
        await store.open(_ignore)
        assert await store.position("bridge:a") == "18-0"
        assert await store.position("bridge:b") == "5"
        await store.close()

    asyncio.run(run())


def test_a_refused_write_leaves_its_position_as_it_was(make_store: Callable[[], Store]) -> None:
    async def run() -> None:
        store = make_store()
        await store.open(_ignore)
        await store.write([WriteOp("put", "orders", "o1", {"n": 1})], ("bridge:in", "1"))
        with pytest.raises(Problem):
            await store.write(
                [
                    WriteOp("put", "orders", "o2", {"n": 2}),
                    WriteOp("put", "orders", "o1", {"n": 3}, if_match=99),
                ],
                ("bridge:in", "2"),
            )
        assert await store.position("bridge:in") == "1"
        assert (await store.get("orders", "o2")) is None
        await store.close()

    asyncio.run(run())


def test_writes_committed_together_keep_the_last_position_of_each_name(
    make_store: Callable[[], Store],
) -> None:
    async def run() -> None:
        store = make_store()
        await store.open(_ignore)
        # Queued together, so that the writer commits them as one group.
        await asyncio.gather(
            *(
                store.write([WriteOp("put", "orders", f"o{n}", {"n": n})], ("bridge:x", str(n)))
                for n in range(1, 51)
            )
        )
        assert await store.position("bridge:x") == "50"
        await store.close()

    asyncio.run(run())
