"""Charging stations: wire payloads (and, later, live state and rules)."""
