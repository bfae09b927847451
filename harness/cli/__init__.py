"""Console entry points: thin Hydra shells around the core."""

from importlib.resources import files

from harness.settings.nodes import register

# The config tree: the top-level conf/ in a checkout, harness/conf in an installed wheel (both are the
# package harness.conf); absolute, so console scripts work from any folder.
CONFIG_DIR = str(files("harness.conf"))

register()  # the typed defaults every conf/ file composes on (harness/settings/nodes.py)
