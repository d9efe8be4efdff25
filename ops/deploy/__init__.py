"""Deployment files (Dockerfile, nginx, Prometheus, Grafana) and the lb's backend discovery."""
