"""What a commit costs the hub with 1,000 parked watchers: unfiltered, 1,000 distinct equality
filters (indexed), and the same filters tested one by one (the index switched off).

In-process and without sockets: it isolates the matching the filter index saves, so that
"per delivered event" compares the hub's work alone. A delivery's socket write (about 8 us on
the reference machine, see docs/benchmarks.md) comes on top of every row alike.

    .venv/bin/python bench/hub_index.py
"""

from __future__ import annotations

import time

from watchroute.core.change import MODIFIED, Change, encode
from watchroute.core.filter import compile_filter
from watchroute.core.hub import Hub
from watchroute.core.watcher import Watcher
from watchroute.core.window import Window

WATCHERS = 1000
CHANGES = 5000


class Unindexed:
    """The same filter with nothing the hub can index: it is tested against every change."""

    def __init__(self, text: str) -> None:
        self.matches = compile_filter(text).matches


def run(filtered: bool, indexed: bool) -> tuple[float, int]:
    hub, window = Hub(), Window(CHANGES + 16, 0)
    delivered = 0

    def push(events: list) -> None:
        nonlocal delivered
        delivered += len(events)

    for i in range(WATCHERS):
        text = f"symbol=S{i}"
        flt = None if not filtered else compile_filter(text) if indexed else Unindexed(text)
        w = Watcher(hub, window, None, "c", None, flt, 0)  # type: ignore[arg-type]
        w.push = push
        hub.park(w)
    changes = []
    for r in range(1, CHANGES + 1):
        data = {"symbol": f"S{r % WATCHERS}", "price": r}
        changes.append(Change(r, MODIFIED, "c", f"id{r % WATCHERS}", 1, encode(data), encode(data), 0.0))
    started = time.perf_counter()
    for change in changes:
        window.append([change])
        hub.publish([change])
    return time.perf_counter() - started, delivered


def main() -> None:
    rows = [
        ("1,000 unfiltered watchers", False, True),
        ("1,000 distinct equality filters, indexed", True, True),
        ("1,000 distinct equality filters, tested one by one", True, False),
    ]
    print("| watchers | deliveries | hub time per change | hub time per delivered event |")
    print("|---|---|---|---|")
    for name, filtered, indexed in rows:
        seconds, delivered = run(filtered, indexed)
        print(
            f"| {name} | {delivered:,} | {seconds / CHANGES * 1e6:,.1f} us | "
            f"{seconds / delivered * 1e6:,.2f} us |"
        )


if __name__ == "__main__":
    main()
