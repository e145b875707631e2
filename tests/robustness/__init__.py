"""Robustness tests: guards end to end, target faults, crashes, a model, bad input, secrets."""
