"""Tests against real backends: Arize Phoenix (OTLP traces) and Prometheus (metrics)."""
