"""Conflation: a watcher that is behind gets only the newest state of each resource.

`conflate=true` is for latest-value collections (prices, positions, presence), where a client
that fell behind wants where things are now, not every step on the way. When such a watcher
reads a run of changes that it is behind on (from the window or the log), the changes of one
resource fold into one event: the last change, under the type that its membership before and
after the run gives (ADDED, MODIFIED, DELETED, or nothing for a resource that came and went).
Every event keeps its true revision (the revision of the change it carries), and the events go
out in revision order.

A fold must not cross a change that takes the resource out of the watch (a deletion, or leaving
the filter): such a change ends the resource's run, and what comes after it starts a new run.
That is what makes every event a safe resume point. Invariant, for a client that has received
every event up to one with revision R (and nothing after it) and resumes with since=R:

  (a) every resource the client holds is in the watch at R, and
  (b) every resource whose state at R the client does not hold (it holds an older state, or
      lacks it) was in the watch at R and has a change after R.

Proof sketch: a run that began before R and ends after it (its event not yet received) began
with the resource in the watch (the client holds the state from before the run) or with an
ADDED (the client lacks it); runs end at a leave, so either way the resource is still in the
watch at R, and its change after R is the run's end. Runs that ended at or before R were
received. A resumed watch reads from R: for a resource of (b) its first run starts in the
watch, so it folds to a MODIFIED with the whole object or a DELETED, which sets the client
right; resources of (a) that are right stay right, and a DELETED of a resource the client
lacks is harmless. The next cut keeps (a) and (b) by the same argument, and once the client
has read to the end nothing differs. Without the rule, a resource deleted before R, created
again and deleted again after R would fold into one DELETED after R; a client cut at R would
hold it for ever, since the resumed watch sees it absent at R and absent at the end.

Because of (b), a client cut in the middle of a conflated read may hold an older state than
the one at its resume point, so a MODIFIED from a conflated read always carries the whole
object (RESTATED), also in a `format=patch` watch. Patches come with live events only, which
the hub pushes to a watcher that has read everything: by then the client holds every state.
"""

from __future__ import annotations

from collections.abc import Callable

from watchroute.core.change import ADDED, MODIFIED, RESTATED, Change

Classify = Callable[[Change], "str | None"]


Events = list[tuple[str, Change]]


def conflate(classify: Classify, changes: list[Change], limit: int) -> tuple[Events, int | None]:
    """Fold `changes` (in revision order) for one watcher. Returns the events, in revision
    order, and the revision to place the cursor at when there were more than `limit` of them
    (the revision of the last one returned; the rest are read again from there), else None."""
    # id -> (was in the watch before the run, last change of the run)
    runs: dict[str, tuple[bool, Change]] = {}
    events: list[tuple[str, Change]] = []
    for change in changes:
        kind = classify(change)
        if kind is None:
            continue
        run = runs.get(change.id)
        before = run[0] if run is not None else kind != ADDED
        if kind in (ADDED, MODIFIED):
            runs[change.id] = (before, change)
            continue
        # A leave (DELETED, or WITHDRAWN for a rule-guarded watcher) ends the run here.
        runs.pop(change.id, None)
        if before:
            events.append((kind, change))
        # else: it came and went within the run; the client never held it
    for before, change in runs.values():
        events.append((RESTATED if before else ADDED, change))
    events.sort(key=lambda event: event[1].revision)
    if len(events) > limit:
        del events[limit:]
        return events, events[-1][1].revision
    return events, None
