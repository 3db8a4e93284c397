"""Rule vocabulary shared by charging and garage rules: thresholds, verdicts, alerts."""
