"""docker-compose.yml and ops/deploy/ hold together: parse, env names the code reads, pinned
images, scrape targets, the TLS front, and a dashboard that queries only metrics the code exports.

There is no Docker engine here; these checks read the files the way compose would.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "ops" / "deploy"
OUR_IMAGE = "tourbook"

# metric names fixed by the design (lb) and the backend's contract
FIXED_METRICS = {
    "lb_requests_total",
    "lb_request_duration_seconds",
    "lb_in_flight_requests",
    "lb_upstream_retries_total",
    "lb_backend_ejections_total",
    "lb_backend_breaker_state",
    "lb_backend_healthy",
    "lb_backend_outstanding_requests",
    "lb_lb_errors_total",
    "lb_admission_admitted_total",
    "lb_admission_rejected_total",
    "lb_admission_mode",
    "lb_admission_redis_errors_total",
    # overload control (issue 14)
    "lb_backend_concurrency_limit",
    "lb_backend_min_rtt_seconds",
    "lb_overload_queue_length",
    "lb_overload_queue_delay_seconds",
    "lb_overload_shed_total",
    "lb_overload_admitted_total",
    "backend_http_requests_total",
    "backend_http_request_duration_seconds",
    "backend_bookings_total",
    "backend_shard_up",
    "backend_shard_unavailable_total",
    # the lb's micro-cache (issue 10)
    "lb_cache_requests_total",
    "lb_cache_bytes",
    "lb_cache_limit_bytes",
}

_ENV_READ = re.compile(
    r"""(?:(?<![.\w])get|(?:environ|ENV|env)\.(?:get|setdefault)|getenv|\benv_\w+|\b_int|\b_bool|environ\[)"""
    r"""\(?\s*(?:\w+\s*,\s*)?["']([A-Z][A-Z0-9_]{2,})["']"""
)
_ENV_READ_MULTILINE = re.compile(r"""env_\w+\(\s*\w+,\s*["']([A-Z][A-Z0-9_]{2,})["']""")
_SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]+)")


def env_names_read(*paths: Path) -> set[str]:
    """Environment variable names the code at `paths` reads (files or directories)."""
    names: set[str] = set()
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            text = file.read_text()
            if file.suffix == ".sh":
                names |= set(_SHELL_READ.findall(text))
            else:
                names |= set(_ENV_READ.findall(text)) | set(_ENV_READ_MULTILINE.findall(text))
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def ours(service: dict) -> bool:
    return str(service.get("image", "")).split(":")[0] == OUR_IMAGE


def test_compose_parses_and_has_every_part_of_the_deployment(compose):
    services = compose["services"]
    for name in (
        "lb",
        "backend",
        "db-default",
        "db-shard0",
        "db-shard1",
        "redis",
        "nginx",
        "prometheus",
        "grafana",
        "migrate",
    ):
        assert name in services, name
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        assert "command" in service or not ours(service), name


def test_backend_scales_and_the_lb_follows_the_service_name(compose):
    backend = compose["services"]["backend"]
    # `--scale backend=N` needs no fixed name and no fixed host port
    assert "container_name" not in backend and "ports" not in backend
    lb = compose["services"]["lb"]
    assert lb["command"] == ["python", "-m", "ops.deploy.discover"]
    bind_port = backend["environment"]["GUNICORN_BIND"].rsplit(":", 1)[1]
    assert lb["environment"]["LB_BACKEND_SERVICE"] == f"backend:{bind_port}"


def test_every_environment_variable_is_one_the_code_reads(compose):
    backend_reads = env_names_read(ROOT / "backend")
    lb_reads = env_names_read(ROOT / "lb" / "config.py", DEPLOY / "discover.py")
    cert_reads = env_names_read(DEPLOY / "nginx" / "make-cert.sh")
    # sanity: the scanners do find the contract's variables
    assert {"DATABASE_URL", "SHARD_URLS", "DJANGO_SECRET_KEY", "GUNICORN_BIND"} <= backend_reads
    assert {"LB_LISTEN", "BUCKET_CAPACITY", "LEAK_RATE", "LB_BACKEND_SERVICE"} <= lb_reads
    checked = 0
    for name, service in compose["services"].items():
        if not ours(service):
            continue
        env = set(service.get("environment", {}))
        if name == "lb":
            allowed = lb_reads
        elif name == "certs":
            allowed = cert_reads
        else:
            allowed = backend_reads
        assert env - allowed == set(), f"{name} sets variables nothing reads: {env - allowed}"
        checked += 1
    assert checked >= 5


def test_lb_environment_is_valid_lb_configuration(compose):
    from lb.config import load_settings

    env = dict(compose["services"]["lb"]["environment"])
    env["LB_BACKENDS"] = "http://172.28.0.20:8000,http://172.28.0.21:8000"  # what discover sets
    settings = load_settings(env)
    nginx_ip = ipaddress.ip_address(
        compose["services"]["nginx"]["networks"]["tourbook"]["ipv4_address"]
    )
    # the TLS front, and only it, may speak for clients
    assert any(nginx_ip in net for net in settings.trusted_proxies)
    assert all(net.num_addresses == 1 for net in settings.trusted_proxies)
    subnet = ipaddress.ip_network(compose["networks"]["tourbook"]["ipam"]["config"][0]["subnet"])
    assert nginx_ip in subnet
    assert (
        settings.redis_url and settings.listen.port == 8080 and settings.admin_listen.port == 9100
    )


def test_backend_environment_is_production_shaped(compose):
    env = compose["services"]["backend"]["environment"]
    assert env["DJANGO_DEBUG"] == "0"
    # no secret in the repository: compose refuses to start without one
    assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    assert len(env["SHARD_URLS"].split(",")) == 2
    hosts = {
        url.split("@")[1].split(":")[0]
        for url in [env["DATABASE_URL"], *env["SHARD_URLS"].split(",")]
    }
    assert hosts == {"db-default", "db-shard0", "db-shard1"} <= set(compose["services"])


def test_postgres_asks_every_connection_for_a_scram_password(compose):
    """No `trust`: the databases want the password (from the environment, never the file)."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?im)^\s*POSTGRES_HOST_AUTH_METHOD:\s*trust", text)
    databases = [s for s in compose["services"].values() if "postgres" in str(s.get("image"))]
    assert len(databases) == 3
    for service in databases:
        env = service["environment"]
        assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
        assert "--auth-host=scram-sha-256" in env["POSTGRES_INITDB_ARGS"]
        assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    backend = compose["services"]["backend"]["environment"]
    for url in [backend["DATABASE_URL"], *backend["SHARD_URLS"].split(",")]:
        assert url.startswith("postgresql://tourbook:${POSTGRES_PASSWORD:?"), url


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (name, image)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M).group(1)
    assert re.search(r":\d+\.\d+\.\d+", base), base


def test_prometheus_scrapes_the_lb_and_every_replica(compose):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    admin_port = compose["services"]["lb"]["environment"]["LB_ADMIN_LISTEN"].rsplit(":", 1)[1]
    assert jobs["lb"]["static_configs"][0]["targets"] == [f"lb:{admin_port}"]
    sd = jobs["backend"]["dns_sd_configs"][0]
    assert sd["names"] == ["backend"] and sd["type"] == "A"
    assert (
        str(sd["port"])
        == compose["services"]["backend"]["environment"]["GUNICORN_BIND"].rsplit(":", 1)[1]
    )
    mounted = compose["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./ops/deploy/prometheus.yml:")


def test_nginx_terminates_tls_in_front_of_the_lb_with_a_generated_certificate(compose):
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    lb_port = compose["services"]["lb"]["environment"]["LB_LISTEN"].rsplit(":", 1)[1]
    assert f"server lb:{lb_port};" in conf
    assert re.search(r"listen 443 ssl;", conf)
    # replicas accept any Host (probes come by address), so the front must filter host names
    assert "listen 443 ssl default_server;" in conf and "return 421;" in conf
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
    assert (
        "ssl_certificate /certs/tls.crt;" in conf and "ssl_certificate_key /certs/tls.key;" in conf
    )
    certs = compose["services"]["certs"]
    assert certs["command"][-1] == "ops/deploy/nginx/make-cert.sh"
    assert compose["services"]["nginx"]["depends_on"]["certs"]["condition"] == (
        "service_completed_successfully"
    )
    script = (DEPLOY / "nginx" / "make-cert.sh").read_text()
    assert "openssl req -x509" in script


def test_no_private_key_is_committed():
    for path in ROOT.rglob("*"):
        if ".venv" in path.parts or ".git" in path.parts or "var" in path.parts:
            continue
        if path.is_file() and path.suffix in (".key", ".pem", ".crt", ".p12"):
            pytest.fail(f"key material in the repository: {path}")
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY-----" not in path.read_text(errors="replace"), path


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tourbook.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:lb|backend)_[a-z0-9_]+)\b", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def exported_by_code(name: str) -> bool:
    """prometheus_client adds `_total` to counters: accept either spelling in the source."""
    base = name.removesuffix("_total")
    pattern = re.compile(rf"""["']{re.escape(base)}(_total)?["']""")
    return any(
        pattern.search(path.read_text())
        for folder in ("lb", "backend")
        for path in (ROOT / folder).rglob("*.py")
    )


def test_dashboard_has_the_panels_an_operator_needs():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tourbook.json").read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for needle in ("status", "latency", "429", "health", "breaker", "bookings per second"):
        assert needle in titles, needle
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "tourbook.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_queries_name_only_metrics_the_code_exports():
    queried = set().union(*(metric_names(expr) for expr in dashboard_queries()))
    assert queried - FIXED_METRICS == set(), "queries name metrics outside the contract"
    missing = sorted(name for name in queried if not exported_by_code(name))
    assert missing == [], f"the dashboard queries metrics no code exports: {missing}"
