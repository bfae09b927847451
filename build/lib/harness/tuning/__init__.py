"""Tuning: one tuning run of a cell (trials, pruning, budget, workers) and the re-runs of its best (layer 5)."""
