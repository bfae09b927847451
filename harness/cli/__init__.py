"""Console entry points: thin Hydra shells around the core."""

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
# The repository's conf/ and studies/ (absolute, so console scripts work from any folder).
CONFIG_DIR = str(_ROOT / "conf")
STUDIES_DIR = str(_ROOT / "studies")
