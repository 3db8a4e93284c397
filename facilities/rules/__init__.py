"""Rules: thresholds now; the engine arrives with the rules issue."""
