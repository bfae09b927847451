"""Settings: the typed config groups and the one door that checks a composed config (layer 1; imports nothing above it)."""
