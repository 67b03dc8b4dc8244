"""Dashboards and Prometheus metrics (spec §16 Observability)."""
