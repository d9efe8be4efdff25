"""`python -m ops <command>`: `up` runs the whole stack (see ops/up.py)."""

from __future__ import annotations

import sys

USAGE = """usage: python -m ops up [options]    run the whole stack in the foreground
       python -m ops up --help           its options"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up",):
        print(USAGE)
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    from ops import up

    return up.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
