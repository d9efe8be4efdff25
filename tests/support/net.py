"""Free ports and waiting for listeners on the loopback interface (shared with ops)."""

from ops.servers import free_port, free_run, wait_for_port

__all__ = ["free_port", "free_run", "wait_for_port"]
