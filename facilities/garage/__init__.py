"""Garages and their gates: wire payloads (and, later, live state and rules)."""
