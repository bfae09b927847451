"""Console entry points: thin Hydra shells around the core."""

from pathlib import Path

# The repository's conf/ (an absolute path, so installed console scripts find it from any folder).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
