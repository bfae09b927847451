"""Store: the Optuna storage, the records harness keeps beside Optuna's data, and the locks (layer 2)."""
