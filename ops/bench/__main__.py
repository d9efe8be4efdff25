"""Dispatch `python -m ops.bench <name> [options]` to ops.bench.<name>.main(argv)."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "lb": "the lb against a direct backend, nginx and an aiohttp proxy",
    "admission": "the lb with in-process buckets vs Redis buckets",
    "bookings": "committed bookings per second on a hot tour and spread over many",
    "cache": "browsing through the lb on PostgreSQL + Redis, micro-cache off vs on",
    "overload": "the stack at 0.8x-10x its capacity, open loop: the lb next to HAProxy",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print("usage: python -m ops.bench {" + "|".join(BENCHES) + "} [options]")
        for name, what in BENCHES.items():
            print(f"  {name:<10} {what}")
        return 2
    module = importlib.import_module(f"ops.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
