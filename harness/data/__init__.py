"""Data: datasets read into pools, splits, nested subsets, validation draws, the pretraining source (layer 3)."""
