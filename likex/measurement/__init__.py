"""Measuring a model: target rates with 95% intervals (rates), held-out text scores and the
floor (scores), and the two together against a reference (evaluation)."""
