"""Real child processes for tests: the one wrapper of ops/processes.py (log file, stopped by PID)."""

from ops.processes import ROOT, Process, python

__all__ = ["ROOT", "Process", "python"]
