"""Probe endpoints: reachable by IP whatever DJANGO_ALLOWED_HOSTS says; replica metrics are
not served to requests that came through the public lb."""

from __future__ import annotations

from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def test_probes_answer_any_host_and_metrics_refuse_proxied_requests(
    backend_env: dict[str, str], replicas: Any
) -> None:
    (base,) = replicas(1, env=backend_env, extra_env={"DJANGO_ALLOWED_HOSTS": "tours.example"})
    by_ip = {"Host": "10.0.3.7:8001"}

    # an ordinary API path still enforces the allowed hosts (JSON 400)
    api = requests.get(f"{base}/api/tours/", headers=by_ip, timeout=10)
    assert api.status_code == 400 and api.headers["Content-Type"].startswith("application/json")

    # the probes answer a scraper or health checker that uses the replica's address
    assert requests.get(f"{base}/healthz", headers=by_ip, timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{base}/readyz", headers=by_ip, timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    scrape = requests.get(f"{base}/metrics", headers=by_ip, timeout=10)
    assert scrape.status_code == 200 and "backend_http_requests_total" in scrape.text

    # through the lb (which always sets X-Forwarded-For) the metrics are not public
    proxied = requests.get(
        f"{base}/metrics", headers={**by_ip, "X-Forwarded-For": "203.0.113.9"}, timeout=10
    )
    assert proxied.status_code == 404
    assert proxied.json()["code"] == "not_found"
    assert "backend_http_requests_total" not in proxied.text
