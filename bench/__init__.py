"""Benchmarks of the agent and the manager: scripts run by hand, not tests (see bench/README.md)."""
