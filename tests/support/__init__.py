"""What the tests (and bench/) share: waiting, a movable clock, device payloads, simulated
devices, and the broker and service processes."""
