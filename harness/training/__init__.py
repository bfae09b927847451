"""Training: one run of one strategy -> RunResult; models, strategies, weights, pretraining, measured compute (layer 4)."""
