"""A shared shopping list, and a robot that edits it now and then: the collaborative list at
/demos/collab, which two people (two windows) edit at once.

    make serve                           # in one terminal
    .venv/bin/python demos/collab.py     # in another: the list, and a robot editing it
    # then open the address it prints in two windows and edit in both

Every edit, the robot's as the pages', is a JSON patch (RFC 6902) with `If-Match:
"<revision>"` of the state it was made from. When another edit landed first it is refused with
412, and made again on the newer state (the item found again by its id): edits never overwrite
each other, and every copy converges. `--interval` (seconds between the robot's edits; 0: no
robot), `--edits` (by default it runs until interrupted), `--list`, `--seed`; `--url` (or
WATCHROUTE_URL) names the server. A server restarted meanwhile is waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from resilient import Persistent

from watchroute.client import Client, NotFound, PreconditionFailed

TITLE = "Groceries"
FIRST = ["bread", "milk", "coffee"]
MORE = [
    "apples",
    "butter",
    "cheese",
    "eggs",
    "flour",
    "honey",
    "jam",
    "lemons",
    "oats",
    "pasta",
    "rice",
    "tea",
    "tomatoes",
    "yoghurt",
]
ATTEMPTS = 10


def item(text: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:10], "text": text, "done": False}


def robot_edit(items: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """What the robot means to do next, as an intent that survives someone else's edit."""
    if len(items) < 4 or rng.random() < 0.4:
        return {"op": "add", "item": item(rng.choice(MORE))}
    chosen = rng.choice(items)
    if chosen.get("done") and rng.random() < 0.5:
        return {"op": "remove", "id": chosen["id"]}
    return {"op": "done", "id": chosen["id"], "done": not chosen.get("done")}


def patch_for(intent: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The JSON patch that does `intent` to this state of the list; None when nothing is left
    to do (the item is gone, or already as asked). The same rule as the page's."""
    if intent["op"] == "add":
        # Already there: an earlier attempt committed, though its answer was lost.
        if any(it.get("id") == intent["item"]["id"] for it in items):
            return None
        return [{"op": "add", "path": "/items/-", "value": intent["item"]}]
    index = next((i for i, it in enumerate(items) if it.get("id") == intent["id"]), None)
    if index is None:
        return None
    if intent["op"] == "remove":
        return [{"op": "remove", "path": f"/items/{index}"}]
    if items[index].get("done") == intent["done"]:
        return None
    return [{"op": "replace", "path": f"/items/{index}/done", "value": intent["done"]}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the server (default: WATCHROUTE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--collection", default="lists")
    parser.add_argument("--list", default="groceries")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between the robot's edits")
    parser.add_argument("--edits", type=int, help="stop after this many edits")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    persist = Persistent()
    with Client(args.url) as client:
        with contextlib.suppress(PreconditionFailed):  # there already: its items stand
            first = {"title": TITLE, "items": [item(text) for text in FIRST]}
            persist(client.put, args.collection, args.list, first, create_only=True)
        query = {"list": args.list, **({"collection": args.collection} if args.collection != "lists" else {})}
        print(f"list {args.list} in {client.url}/v1/{args.collection}")
        print(f"open {client.url}/demos/collab?{urlencode(query)} in two windows", flush=True)
        edits = 0
        while args.interval > 0 and (args.edits is None or edits < args.edits):
            time.sleep(args.interval)
            try:
                lst = persist(client.get, args.collection, args.list)
            except NotFound:
                print(f"list {args.list} is gone; the robot stops", flush=True)
                return
            intent = robot_edit((lst.data or {}).get("items", []), rng)
            for _ in range(ATTEMPTS):
                patch = patch_for(intent, (lst.data or {}).get("items", []))
                if patch is None:
                    break
                try:
                    persist(client.patch, args.collection, args.list, patch, if_match=lst.revision)
                except PreconditionFailed:  # another edit came first: again, on the list as it is now
                    lst = persist(client.get, args.collection, args.list)
                    continue
                print(f"robot: {describe(intent, lst.data or {})}", flush=True)
                break
            edits += 1


def describe(intent: dict[str, Any], data: dict[str, Any]) -> str:
    if intent["op"] == "add":
        return f"added {intent['item']['text']}"
    text = next((it["text"] for it in data.get("items", []) if it.get("id") == intent["id"]), "?")
    if intent["op"] == "remove":
        return f"removed {text}"
    return f"{text} {'done' if intent['done'] else 'to do'}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        main()
