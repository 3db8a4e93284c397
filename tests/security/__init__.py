"""Attacks on the service, each kept as a test (docs/security.md)."""
