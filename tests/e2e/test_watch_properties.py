"""Property: every watcher gets exactly the log's changes after its start, in order, once.

Writers run concurrently against a real server; watchers on every transport disconnect at
random points and resume from the last revision they saw. The expected stream of each watcher
is derived from the writers' acknowledgements alone (the revisions tell the commit order), not
from anything the server streams.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.properties import scenario, watcher, write_op


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(write_op, min_size=1, max_size=40),
    writers=st.integers(1, 4),
    watches=st.lists(watcher, min_size=1, max_size=4),
)
def test_every_watcher_gets_exactly_the_log(server, ops, writers, watches):
    asyncio.run(scenario(server.url, ops, writers, watches))
