"""Black-Friday scenario: `locust -f loadtest/locustfile.py` (LOADTEST_PROFILE=smoke|peak|peak150).

Headless runs write CSV and an HTML report (loadtest/reports/<timestamp>/ unless --csv/--html
say otherwise) and exit non-zero when a threshold in thresholds.py is missed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events

from loadtest.flows import PROFILE, Booker, Browser
from loadtest.report import judge, report_dir
from loadtest.shape import stages, target_at

__all__ = ["BlackFridayShape", "Booker", "Browser"]


class BlackFridayShape(LoadTestShape):
    """Baseline, pre-sale build-up, a spike to peak within 60 s, hold, decay; then stop."""

    plan = stages(PROFILE)

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        # Locust does not apply --run-time to a shape: honour it here, to cut a run short
        options = getattr(self.runner.environment, "parsed_options", None) if self.runner else None
        limit = getattr(options, "run_time", None)
        if limit and run_time >= limit:
            return None
        stage = target_at(self.plan, run_time)
        return None if stage is None else (stage.users, stage.spawn_rate)


@events.init_command_line_parser.add_listener
def _report_defaults(parser: Any, **_kwargs: Any) -> None:
    directory = report_dir(Path(__file__).parent / "reports", time.gmtime())
    parser.set_defaults(
        csv_prefix=str(directory / PROFILE.name), html_file=str(directory / "report.html")
    )


@events.quitting.add_listener
def _thresholds(environment: Any, **_kwargs: Any) -> None:
    environment.process_exit_code = judge(environment.stats, PROFILE.name)
