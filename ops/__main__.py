"""`python -m ops <command>`: `up` runs the whole stack (ops/up.py); `tune` changes the running
lb's admission policy (ops/tune.py)."""

from __future__ import annotations

import sys

USAGE = """usage: python -m ops up [options]    run the whole stack in the foreground
       python -m ops up --help           its options
       python -m ops tune KEY=VALUE ...  change the running lb's admission policy live"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "tune"):
        print(USAGE)
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    if argv[0] == "tune":
        from ops import tune

        return tune.main(argv[1:])
    from ops import up

    return up.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
