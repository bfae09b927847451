"""Which files of an image folder can be read: checked once when the folder is loaded, so that an
unreadable file is named at the door (or left out, when asked) instead of failing mid-training."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import ConfigError


class ReadableImages:
    """An ImageFolder `is_valid_file`: image files PIL can identify (the header only: cheap); the
    unreadable ones are noted and left out, then refused or reported by `settle`."""

    def __init__(self) -> None:
        self.unreadable: list[str] = []

    def __call__(self, path: str) -> bool:
        from PIL import Image
        from torchvision.datasets.folder import IMG_EXTENSIONS

        if not path.lower().endswith(IMG_EXTENSIONS):
            return False
        try:
            with Image.open(path):
                return True
        except OSError:  # PIL's UnidentifiedImageError, and files that cannot be read at all
            self.unreadable.append(path)
            return False

    def settle(self, root: Path, skip: bool) -> None:
        if not self.unreadable:
            return
        first, n = self.unreadable[0], len(self.unreadable)
        if not skip:
            more = f" (and {n - 1} more)" if n > 1 else ""
            raise ConfigError(f"{first} is not a readable image{more}: remove or replace it, or set "
                              "data.skip_bad_files=true to leave unreadable files out")
        print(f"data: skipped {n} unreadable file(s) under data.root={root} (data.skip_bad_files=true), e.g. {first}",
              file=sys.stderr, flush=True)
