"""Liveness (/healthz), readiness (/readyz) and the Prometheus endpoint (/metrics)."""
