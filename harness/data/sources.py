"""Source selection: what pretraining learns from (`data.source`): the dataset's own source classes
or printed glyphs rendered into a pool shaped like the target's images."""

from __future__ import annotations

import torch

from harness.data.pools import _Pool
from harness.settings.schema import DataConfig


def glyph_pool(cfg: DataConfig, target: _Pool) -> _Pool:
    """The rendered glyphs shaped like the target: its image size (unless data.glyphs.image_size
    says otherwise) and channels, scaled as the digits loader scales its 0..16 grid (divide by the
    top value, resize bilinearly, standardise with the pool's own statistics)."""
    from harness.data.glyphs import cached_glyphs

    settings = cfg.glyphs
    counts, labels, _ = cached_glyphs(settings)
    x = torch.from_numpy(counts).float().unsqueeze(1) / settings.levels
    size = int(settings.image_size or target.image_size)
    if size != settings.grid:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x.expand(-1, target.in_chans, -1, -1).contiguous()
    return _Pool(labels=labels, class_names=list(settings.chars), in_chans=target.in_chans, image_size=size, x=x)
