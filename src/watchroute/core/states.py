"""A watcher's states, named as etcd's watchable_store names its groups of watchers.

A watcher is in exactly one of them:
- UNSYNCED: catching up. Its own task reads from the window or the log; the hub ignores it.
- SYNCED: caught up and parked in the hub. A commit that concerns it is pushed straight to its
  socket when its transport gave a receiver (`push`), else it wakes the watcher, which becomes
  UNSYNCED until it has read what is ready and parks again.
- BLOCKED: a victim. A pushed write is still going out because its socket pushed back; the hub
  pushes nothing more and wakes it instead, and its next write waits for the pending one. It
  may be parked meanwhile. Once the write is out it is SYNCED again if parked, else UNSYNCED.
- CLOSED: ended (the client left, the server stops, its credential lapsed); final.
Only the core changes a state: the hub (`park`, `unpark`, a delivery, `wake_all`) and the
watcher's own methods, which the transports and the security layer call (`sync`, `unsync`,
`block`, `unblock`, `withdraw`, `close`).
"""

from __future__ import annotations

UNSYNCED = "unsynced"
SYNCED = "synced"
BLOCKED = "blocked"
CLOSED = "closed"
