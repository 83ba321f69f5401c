"""A few hundred temperature sensors reporting, some of them now and then overheating: the data
of the sensors dashboard at /demos/iot, whose alerts are the sensors above 30 °C.

    make serve                        # in one terminal
    .venv/bin/python demos/iot.py     # in another: 300 sensors, 50 readings a second
    # then open http://127.0.0.1:8000/demos/iot (the script prints the address)

Each reading is a merge patch of one sensor's temperature. Now and then a sensor heats up past
30 °C for a while and cools down again: its alert enters the page's list and leaves it.
`--sensors`, `--rate` (readings a second), `--count` (stop after that many; by default it runs
until interrupted), `--seed`; `--url` (or WATCHROUTE_URL) names the server. A server restarted
meanwhile is waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from dataclasses import dataclass

from resilient import Persistent

from watchroute.client import Client

ROOMS = 12
HOT = 30.0  # what the page calls an alert, unless its address says otherwise
BATCH = 100  # sensors created per `_batch`


@dataclass
class Sensor:
    id: str
    room: str
    usual: float  # the temperature it goes back to
    target: float
    temperature: float

    def state(self) -> dict[str, object]:
        return {"room": self.room, "temperature": self.temperature}

    def read(self, rng: random.Random) -> float:
        """The next reading: towards its target, with noise; a spell of heat starts or ends."""
        if self.target == self.usual and rng.random() < 0.01:
            self.target = rng.uniform(HOT + 1, HOT + 6)
        elif self.target != self.usual and rng.random() < 0.15:
            self.target = self.usual
        self.temperature = round(
            self.temperature + (self.target - self.temperature) * 0.4 + rng.gauss(0, 0.2), 1
        )
        return self.temperature


def sensors(count: int, rng: random.Random) -> list[Sensor]:
    made = []
    for i in range(count):
        usual = round(rng.uniform(18, 26), 1)
        made.append(Sensor(f"s-{i + 1:03d}", f"room {i % ROOMS + 1}", usual, usual, usual))
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the server (default: WATCHROUTE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--collection", default="sensors")
    parser.add_argument("--sensors", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="readings per second")
    parser.add_argument("--count", type=int, help="stop after this many readings")
    parser.add_argument("--seed", type=int, help="the same seed makes the same readings")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    fleet = sensors(args.sensors, rng)
    persist = Persistent()
    with Client(args.url) as client:
        for start in range(0, len(fleet), BATCH):
            ops = [
                {"op": "put", "collection": args.collection, "id": s.id, "data": s.state()}
                for s in fleet[start : start + BATCH]
            ]
            persist(client.batch, ops)
        print(f"{len(fleet)} sensors in {client.url}/v1/{args.collection}; {args.rate:g} readings a second")
        page = f"{client.url}/demos/iot" + (
            "" if args.collection == "sensors" else f"?collection={args.collection}"
        )
        print(f"open {page}", flush=True)
        due = time.monotonic()
        readings = 0
        while args.count is None or readings < args.count:
            sensor = rng.choice(fleet)
            temperature = sensor.read(rng)
            persist(client.patch, args.collection, sensor.id, {"temperature": temperature})
            readings += 1
            # On a fixed schedule, so that a slow answer does not lower the rate for good; after
            # a long wait (the server was away) the schedule starts again from now.
            due = max(due + 1 / args.rate, time.monotonic() - 1)
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        main()
