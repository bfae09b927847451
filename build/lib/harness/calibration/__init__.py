"""Calibration: simulated studies with known truth, for tests and benchmarks only (layer 8)."""
