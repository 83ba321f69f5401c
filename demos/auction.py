"""Bidding robots on one lot: the other bidders of the auction page at /demos/auction.

    make serve                            # in one terminal
    .venv/bin/python demos/auction.py     # in another: a lot, and two robots bidding on it
    # then open the address it prints, in two windows, with two names, and bid against them

A bid is a PUT of the lot with `If-Match: "<revision>"`, the revision of the bid it answers. In
each round every robot reads the lot once and bids on what it read, so they race: the first bid
holds, every other is refused with 412 (someone bid first) and the script says so. The pages
bid the same way. `--bots` (0: only put the lot up), `--interval` (seconds between rounds),
`--rounds` (by default it runs until interrupted), `--lot`, `--start` (the opening bid),
`--seed`; `--url` (or WATCHROUTE_URL) names the server. A server restarted meanwhile is waited
for.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from urllib.parse import urlencode

from resilient import Persistent

from watchroute.client import Client, NotFound, PreconditionFailed, Resource

TITLE = "A 1962 Fender Stratocaster, sunburst"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the server (default: WATCHROUTE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--collection", default="lots")
    parser.add_argument("--lot", default="lot-1")
    parser.add_argument("--start", type=int, default=100, help="the opening bid")
    parser.add_argument("--bots", type=int, default=2)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between rounds of bids")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    persist = Persistent()
    opening = {"title": TITLE, "bid": args.start, "bidder": "opening bid", "bids": 0}
    with Client(args.url) as client:
        put_up(client, persist, args.collection, args.lot, opening)
        query = {"lot": args.lot, **({"collection": args.collection} if args.collection != "lots" else {})}
        print(f"lot {args.lot} in {client.url}/v1/{args.collection}; {args.bots} robots bidding")
        print(f"open {client.url}/demos/auction?{urlencode(query)}&name=you", flush=True)
        rounds = 0
        while args.rounds is None or rounds < args.rounds:
            time.sleep(args.interval)
            try:
                lot = persist(client.get, args.collection, args.lot)
            except NotFound:  # taken down meanwhile: up again, at the opening bid
                put_up(client, persist, args.collection, args.lot, opening)
                continue
            bidders = [f"robot-{i + 1}" for i in range(args.bots)]
            rng.shuffle(bidders)
            for bidder in bidders:
                seen = lot.data or {}
                amount = int(seen.get("bid", 0)) + rng.randint(1, 10)
                data = {**seen, "bid": amount, "bidder": bidder, "bids": int(seen.get("bids", 0)) + 1}
                try:
                    persist(client.put, args.collection, args.lot, data, if_match=lot.revision)
                    outcome = "leads"
                except PreconditionFailed:
                    # Unless a first attempt committed and its answer was lost: the 412 is its own.
                    now = persist(client.get, args.collection, args.lot)
                    outcome = "leads" if placed(now, bidder, amount) else "412, someone bid first"
                except NotFound:
                    break
                print(f"{bidder} bid {amount} on {seen.get('bid')}: {outcome}", flush=True)
            rounds += 1


def placed(lot: Resource, bidder: str, amount: int) -> bool:
    data = lot.data or {}
    return data.get("bidder") == bidder and data.get("bid") == amount


def put_up(client: Client, persist: Persistent, collection: str, lot: str, data: dict[str, object]) -> None:
    """Puts the lot up unless it is up already (then its bids stand)."""
    with contextlib.suppress(PreconditionFailed):
        persist(client.put, collection, lot, data, create_only=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        main()
