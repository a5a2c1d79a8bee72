"""``python -m apps.olympics_streams produce N [--seed S] [--rate R] [--url URL]``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from apps.olympics_streams.producer import generate_orders, produce
from eventbus import connect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.olympics_streams")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("produce", help="append N seeded purchases to the stream")
    p.add_argument("orders", type=int)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--rate", type=float, default=0.0, help="purchases per second (0: as fast as possible)")
    p.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
    args = parser.parse_args(argv)

    async def run() -> int:
        async with connect(args.url) as bus:
            return await produce(bus, generate_orders(args.orders, args.seed), rate=args.rate)

    posted = asyncio.run(run())
    print(f"appended {posted} purchases", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
