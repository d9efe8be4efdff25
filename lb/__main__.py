"""`python -m lb`: settings from the environment (one line and exit 2 when bad), then serve."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from lb.config import ConfigError, effective_environ, load_settings


def main(argv: list[str]) -> int:
    try:
        # the environment plus LB_ENV_FILE (the file wins); the master reads it again on SIGHUP
        settings = load_settings(effective_environ(os.environ))
    except ConfigError as exc:
        print(f"lb: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    import uvloop

    from lb import workers

    try:
        if argv[:1] == ["--worker"]:
            return uvloop.run(workers.run_worker(settings, Path(settings.prometheus_dir)))
        if settings.workers == 1:
            return uvloop.run(workers.run_single(settings))
        from lb import master

        return uvloop.run(master.run_master(settings, dict(os.environ)))
    except OSError as exc:
        print(f"lb: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
