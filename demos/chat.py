"""A chat room with a robot in it: the chat at /demos/chat, which two people (two windows) use at
once.

    make serve                         # in one terminal
    .venv/bin/python demos/chat.py     # in another: the room, and a robot chatting in it
    # then open the address it prints in two windows, with ?user=ann and ?user=ben

Who is here and who is typing are TTL leases in `presence` (`PUT ...?ttl=N`): the robot renews
its presence as the pages do, and shows itself typing for a moment before each message. When it
stops (Ctrl-C, a kill), its leases lapse and every page sees it leave, with nothing to clean up.
Each message has an id made before it is sent and is written with `If-None-Match: *` until the
server answers, so a server restarted meanwhile gets each message once: a write whose answer
was lost is refused the second time (412). `--interval` (seconds between messages),
`--messages` (by default it runs until interrupted), `--room`, `--name`, `--seed`; `--url` (or
WATCHROUTE_URL) names the server. A server restarted meanwhile is waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
import uuid
from urllib.parse import urlencode

from resilient import Persistent

from watchroute.client import Client, PreconditionFailed

PRESENCE_TTL = 15  # seconds; renewed well before it lapses
TYPING_TTL = 3
LINES = [
    "hello, all",
    "anyone around?",
    "the build is green again",
    "lunch at noon?",
    "I'll take the review",
    "the deploy is done",
    "back in five",
    "good point",
    "thanks!",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the server (default: WATCHROUTE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--name", default="robot")
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between messages")
    parser.add_argument("--messages", type=int, help="stop after this many messages")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    persist = Persistent()
    here = {"room": args.room, "user": args.name, "state": "here"}
    typing = {**here, "state": "typing"}
    with Client(args.url) as client:
        with contextlib.suppress(PreconditionFailed):  # there already
            persist(client.put, "rooms", args.room, {"name": args.room}, create_only=True)
        print(f"room {args.room} in {client.url}/v1/messages")
        print(f"open {client.url}/demos/chat?{urlencode({'room': args.room})} in two windows", flush=True)
        sent = 0
        renewed = 0.0
        while args.messages is None or sent < args.messages:
            if time.monotonic() - renewed > PRESENCE_TTL / 3:
                persist(client.put, "presence", f"{args.room}.{args.name}", here, ttl=PRESENCE_TTL)
                renewed = time.monotonic()
            time.sleep(args.interval)
            persist(client.put, "presence", f"{args.room}.{args.name}.typing", typing, ttl=TYPING_TTL)
            time.sleep(min(1.0, args.interval))
            text = rng.choice(LINES)
            message = {"room": args.room, "author": args.name, "text": text}
            # The id first: a try whose answer is lost and the next one write the same message.
            id = f"{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
            with contextlib.suppress(PreconditionFailed):  # committed by a try whose answer was lost
                persist(client.put, "messages", id, message, create_only=True)
            sent += 1
            print(f"{args.name}: {text}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        main()
