"""`facilities conformance` (docs/protocol.md, "Conformance"): a device's deviations."""
