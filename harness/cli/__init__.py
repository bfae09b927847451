"""Console entry points: thin Hydra shells around the core."""

from pathlib import Path

# The package's conf/ (absolute, so console scripts work from any folder and from an installed wheel).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
