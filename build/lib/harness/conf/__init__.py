"""The Hydra config tree (groups, recipes). It lives at the repository's top level and ships in the
wheel as the package `harness.conf` (pyproject.toml's package-dir), so an editable and a regular
install find it the same way: harness.cli.CONFIG_DIR."""
