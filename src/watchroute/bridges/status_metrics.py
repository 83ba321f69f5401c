"""The bridges' figures for /metrics (`watchroute_bridge_*`, labelled `bridge`), read from their
states at the scrape: the runners only add plain integers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watchroute.bridges.state import FAILED, PAUSED, RUNNING, STANDBY, STARTING, Bridge

STATES = (STARTING, RUNNING, PAUSED, FAILED, STANDBY)
COUNTS = (
    ("published", "Changes a broker accepted from an OUT bridge."),
    ("received", "Messages an IN bridge read."),
    ("written", "Messages an IN bridge wrote to the log."),
    ("rejected", "Malformed messages an IN bridge skipped or dead-lettered."),
    ("errors", "Failures of the broker (or of a webhook delivery)."),
)


def _revision_of(position: str | None) -> int | None:
    """A position as a number: a revision, a JetStream sequence, a Redis id's milliseconds."""
    if not position:
        return None
    head = position.partition("-")[0]
    return int(head) if head.isdigit() else None


def bridge_families(bridges: Iterable[Bridge], head: int) -> Iterator[Metric]:
    bridges = sorted(bridges, key=lambda b: b.name)
    state = GaugeMetricFamily(
        "watchroute_bridge_state",
        "1 for the state each bridge is in on this instance.",
        labels=["bridge", "state"],
    )
    leader = GaugeMetricFamily(
        "watchroute_bridge_leader", "1 when this instance runs the bridge.", labels=["bridge"]
    )
    position = GaugeMetricFamily(
        "watchroute_bridge_position",
        "A bridge's position: the revision an OUT bridge has published to, the broker position an IN "
        "bridge has written from.",
        labels=["bridge"],
    )
    lag = GaugeMetricFamily(
        "watchroute_bridge_lag", "Revisions an OUT bridge is behind the log's head.", labels=["bridge"]
    )
    counts = {
        name: CounterMetricFamily(f"watchroute_bridge_{name}", doc, labels=["bridge"]) for name, doc in COUNTS
    }
    for bridge in bridges:
        s = bridge.state
        for each in STATES:
            state.add_metric([bridge.name, each], 1 if s.state == each else 0)
        leading = s.state != STANDBY
        leader.add_metric([bridge.name], 1 if leading else 0)
        if not leading:
            continue
        at = _revision_of(s.position)
        if at is not None:
            position.add_metric([bridge.name], at)
            if bridge.config.direction == "out":
                lag.add_metric([bridge.name], max(0, head - at))
        for name, _ in COUNTS:
            counts[name].add_metric([bridge.name], getattr(s, name))
    yield state
    yield leader
    yield position
    yield lag
    yield from counts.values()
