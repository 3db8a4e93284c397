"""Thin routers, one module per concern."""
