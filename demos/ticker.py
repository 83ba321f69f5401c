"""A live price feed to watch: stock symbols whose prices take a random walk, each move written as
a merge patch the moment it happens.

    make serve                          # in one terminal
    .venv/bin/python demos/ticker.py    # in another: 20 symbols, 10 moves a second
    # then open http://127.0.0.1:8000/ui?collection=stocks and watch the table follow, or:
    .venv/bin/watchroute watch stocks --initial

`--rate` sets the moves per second, `--symbols` how many symbols, `--count` stops after that
many moves (by default it runs until interrupted); `--url` (or WATCHROUTE_URL) names the server.
A server restarted meanwhile is waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time

from resilient import Persistent

from watchroute.client import Client

TICKERS = "AAPL MSFT NVDA AMZN GOOG META TSLA AVGO ORCL ADBE CRM AMD INTC CSCO QCOM TXN IBM NFLX PYPL UBER"


def symbols(count: int) -> list[str]:
    known = TICKERS.split()
    return known[:count] + [f"SYM{i:04d}" for i in range(len(known), count)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the server (default: WATCHROUTE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--collection", default="stocks")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0, help="price moves per second")
    parser.add_argument("--count", type=int, help="stop after this many moves")
    parser.add_argument("--seed", type=int, help="the same seed makes the same moves")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    prices = {symbol: round(rng.uniform(20, 500), 2) for symbol in symbols(args.symbols)}
    persist = Persistent()
    with Client(args.url) as client:
        for symbol, price in prices.items():
            persist(client.put, args.collection, symbol, {"symbol": symbol, "price": price, "change": 0.0})
        print(f"{len(prices)} symbols in {client.url}/v1/{args.collection}; moving {args.rate:g} a second")
        due = time.monotonic()
        moves = 0
        while args.count is None or moves < args.count:
            symbol = rng.choice(list(prices))
            before = prices[symbol]
            price = prices[symbol] = max(0.01, round(before * (1 + rng.gauss(0, 0.004)), 2))
            move = {"price": price, "change": round(price - before, 2)}
            persist(client.patch, args.collection, symbol, move)
            moves += 1
            # On a fixed schedule, so that a slow answer does not lower the rate for good; after
            # a long wait (the server was away) the schedule starts again from now.
            due = max(due + 1 / args.rate, time.monotonic() - 1)
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        main()
