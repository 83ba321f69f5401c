"""The SQLite store, without a server: revisions are gap-free across jobs and batches, each job's
changes are consecutive and reach `on_commit` in order, and all of it survives a reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watchroute.core.change import Change
from watchroute.core.problems import Problem
from watchroute.store.base import WriteOp
from watchroute.store.sqlite.engine import SQLiteStore


async def opened(path: Path) -> tuple[SQLiteStore, list[int]]:
    heard: list[int] = []
    store = SQLiteStore(str(path))
    await store.open(lambda changes: heard.extend(c.revision for c in changes))
    return store, heard


def puts(collection: str, *ids: str) -> list[WriteOp]:
    return [WriteOp("put", collection, id, {"id": id}) for id in ids]


async def test_concurrent_jobs_take_gap_free_revisions_each_job_consecutive(tmp_path: Path) -> None:
    store, heard = await opened(tmp_path / "w.db")
    try:
        jobs = [puts("t", *(f"{n}-{k}" for k in range(1 + n % 4))) for n in range(60)]
        results: list[list[Change]] = await asyncio.gather(*(store.write(job) for job in jobs))
        total = sum(len(job) for job in jobs)
        for job, changes in zip(jobs, results, strict=True):
            revisions = [c.revision for c in changes]
            assert len(revisions) == len(job)
            assert revisions == list(range(revisions[0], revisions[0] + len(job)))  # one run, whole
        assert sorted(c.revision for changes in results for c in changes) == list(range(1, total + 1))
        assert heard == list(range(1, total + 1))  # handed on in revision order, once each
        assert store.revision == total
    finally:
        await store.close()


async def test_a_refused_job_takes_no_revision_and_leaves_nothing(tmp_path: Path) -> None:
    store, heard = await opened(tmp_path / "w.db")
    try:
        await store.write(puts("t", "a", "b"))
        stale = WriteOp("put", "t", "c", {"n": 1})
        refused = WriteOp("put", "t", "a", {"n": 2}, if_match=99)
        with pytest.raises(Problem) as problem:
            await store.write([stale, refused])
        assert problem.value.status == 412
        assert await store.get("t", "c") is None  # the batch is whole or nothing
        [after] = await store.write(puts("t", "d"))
        assert after.revision == 3
        assert heard == [1, 2, 3]
    finally:
        await store.close()


async def test_revisions_and_the_log_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store, _ = await opened(path)
    await store.write(puts("t", "a", "b", "c"))
    await store.write([WriteOp("delete", "t", "b")])
    await store.close()

    store, heard = await opened(path)
    try:
        assert store.revision == 4 and await store.committed_revision() == 4
        logged = await store.read_log(0, 4, "t", None, 100)
        assert [(c.revision, c.type, c.id) for c in logged.changes] == [
            (1, "ADDED", "a"),
            (2, "ADDED", "b"),
            (3, "ADDED", "c"),
            (4, "DELETED", "b"),
        ]
        [next_change] = await store.write(puts("t", "e"))
        assert next_change.revision == 5 and heard == [5]  # no revision taken twice
        row = await store.get("t", "a")
        assert row is not None and row.revision == 1 and row.data == {"id": "a"}
    finally:
        await store.close()
