"""Histograms the data path fills with plain counting, for `/metrics` to read at the scrape.

prometheus-client's Histogram takes a lock at every observation. The store's writer observes
once per write and per group commit, from its own thread, and is the only one that adds: a
bisect into a preallocated list and an integer add need no lock there. A scrape reads the
counts as they are; `_count` is the sum of the buckets read, so that it always agrees with the
`+Inf` bucket.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import GaugeHistogramMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class Histogram:
    """Counts of observations by upper bound (`le`: a value equal to a bound falls in it)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.observe(value)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) for every bound and +Inf, as the format wants them."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))
        return buckets

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, documentation, buckets=self.cumulative(), sum_value=self.sum)

    def gauge_family(self, name: str, documentation: str) -> GaugeHistogramMetricFamily:
        """As a distribution of now (watchers by lag), not of events over time."""
        return GaugeHistogramMetricFamily(name, documentation, buckets=self.cumulative(), gsum_value=self.sum)
