"""Batch augmentation on the training device: one affine warp for the whole batch, no per-sample
Python, so in-memory tensors never leave the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.settings.schema import AUGMENT_LEVELS as LEVELS  # noqa: E402,F401 (the levels this module draws)

# level -> (max translation as a fraction of the image, max rotation in degrees, scale jitter, cutout)
_SETTINGS = {
    "light": (0.125, 0.0, 0.0, False),
    "strong": (0.15, 15.0, 0.1, True),
}


def augment_batch(x: torch.Tensor, level: str) -> torch.Tensor:
    if level == "off":
        return x
    shift, degrees, scale_jitter, cutout = _SETTINGS[level]
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(degrees)
    scale = 1 + (torch.rand(n, device=x.device) * 2 - 1) * scale_jitter
    tx, ty = ((torch.rand(2, n, device=x.device) * 2 - 1) * 2 * shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cutout:
        out = _cutout(out, frac=0.25)
    return out


def _cutout(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Zero one random square per image (DeVries & Taylor 2017)."""
    n, _, h, w = x.shape
    side = max(1, int(round(min(h, w) * frac)))
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = ((rows - cy).abs() <= side // 2) & ((cols - cx).abs() <= side // 2)
    return x * (~hole).unsqueeze(1).to(x.dtype)
