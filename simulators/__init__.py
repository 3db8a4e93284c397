"""Device simulators that speak the protocol through the same payload models as the service."""
