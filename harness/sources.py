"""Source selection: what pretraining learns from (`data.source`): the dataset's own source classes
or printed glyphs rendered into a pool shaped like the target's images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from harness.errors import ConfigError
from harness.pools import _Pool
from harness.schema import DataConfig

if TYPE_CHECKING:
    from harness.glyphs import GlyphSettings


SOURCES = ("classes", "glyphs")


def source_kind(cfg: DataConfig) -> str:
    """`data.source`: what pretraining learns from. classes = data.source_classes of this dataset;
    glyphs = printed characters (harness/glyphs.py)."""
    kind = cfg.source
    if kind not in SOURCES:
        raise ConfigError(f"data.source={kind} is not one of {', '.join(SOURCES)}: set data.source=classes (the dataset's source classes) or data.source=glyphs (printed letters)")
    return str(kind)


def glyph_settings(cfg: DataConfig) -> "GlyphSettings":
    """The `data.glyphs` settings (checked when the config was loaded: harness.config)."""
    return cfg.glyphs


def glyph_pool(cfg: DataConfig, target: _Pool) -> _Pool:
    """The rendered glyphs shaped like the target: its image size (unless data.glyphs.image_size
    says otherwise) and channels, scaled as the digits loader scales its 0..16 grid (divide by the
    top value, resize bilinearly, standardise with the pool's own statistics)."""
    from harness.glyphs import cached_glyphs

    settings = glyph_settings(cfg)
    counts, labels, _ = cached_glyphs(settings)
    x = torch.from_numpy(counts).float().unsqueeze(1) / settings.levels
    size = int(settings.image_size or target.image_size)
    if size != settings.grid:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x.expand(-1, target.in_chans, -1, -1).contiguous()
    return _Pool(labels=labels, class_names=list(settings.chars), in_chans=target.in_chans, image_size=size, x=x)
