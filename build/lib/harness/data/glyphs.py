"""Printed glyphs as a source task, offline: characters rendered with PIL from the TrueType fonts
matplotlib ships, warped, thickened, blurred, noised, thresholded and block-summed to a small grid.

Why: a source task must share the target's low-level statistics to transfer. Splitting the digits'
own classes (0-4 -> 5-9) gives the target no head start; printed letters drawn the way scikit-learn
made its digits (32x32 bitmaps, 4x4 blocks counted into an 8x8 grid of values 0..16) do.

Each (font, character) is rendered once into a size-normalised template; every example is then a
random warp of a template, done for all examples at once with torch (grid_sample, max-pooling,
grouped convolution), so 20,000 glyphs take a few seconds on one core.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.settings.glyphs import DEFAULT_CHARS, GlyphSettings, font_dir  # noqa: F401 (DEFAULT_CHARS: the rendering's default)

# A plane-16 private-use code point: no shipped font draws it, so PIL draws the font's missing-glyph
# box (or nothing) for it: what a font without a character shows in that character's place.
MISSING_PROBE = "\U0010fffd"
REFERENCE_FONT = "DejaVuSans.ttf"  # always shipped: the shapes other fonts' glyphs must resemble
TEMPLATE_SIZE = 64  # templates are rendered at this resolution, then warped down to the bitmap
_CHUNK = 2048  # examples warped at once (bounds memory: chunk x 64 x 64 floats)


# ------------------------------------------------------------------------------------------ fonts
def _render(path: Path, ch: str, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """One character as drawn by the font (float 0..1, its own bounding box; empty if it draws nothing)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(path), int(size * 0.75))
    canvas = Image.new("L", (size * 3, size * 3), 0)
    ImageDraw.Draw(canvas).text((size, size), ch, font=font, fill=255)
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(ink.max(1) > 0.2), np.flatnonzero(ink.max(0) > 0.2)
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit(ink: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Size-normalise a glyph into a size x size frame, aspect kept, centred (as the digits were)."""
    from PIL import Image

    h, w = ink.shape
    k = size / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize((nw, nh), Image.BILINEAR), dtype=np.float32) / 255.0
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out


def _coarse(template: np.ndarray) -> np.ndarray:
    """A 16x16 zero-mean, unit-norm view of a template, for comparing shapes across fonts."""
    t = torch.from_numpy(template)[None, None]
    v = F.adaptive_avg_pool2d(t, 16).flatten().numpy()
    v = v - v.mean()
    return v / max(np.linalg.norm(v), 1e-9)


@lru_cache(maxsize=8)
def font_templates(chars: str, fonts: tuple[str, ...] | None) -> tuple[tuple[str, ...], np.ndarray]:
    """(usable font names, templates [font, char, 64, 64]).

    A font is used only when it draws every character: each glyph has ink, differs from the
    font's missing-glyph box, differs from its other glyphs, and for most of them the reference
    font's same character is among the few it resembles most (`_recognised`; this drops the symbol fonts that map
    letters to other shapes, cmex10 and cmsy10, and LastResort's one box for everything; italics
    and Computer Modern stay: 22 of matplotlib's fonts for A-Z a-z)."""
    folder = font_dir()
    candidates = sorted(p.name for p in folder.glob("*.ttf")) if fonts is None else list(fonts)
    reference = _glyphs_of(folder / REFERENCE_FONT, chars)
    ref_vecs = None if reference is None else np.stack([_coarse(t) for t in reference])
    names, stacks = [], []
    for name in candidates:
        templates = _glyphs_of(folder / name, chars)
        if templates is None:
            continue
        if ref_vecs is not None:
            if _recognised(templates, ref_vecs) < 0.5:
                continue
        names.append(name)
        stacks.append(templates)
    if not names:
        which = "the fonts named in data.glyphs.fonts" if fonts is not None else f"any font in {folder}"
        raise ConfigError(f"data.glyphs.chars={chars!r}: {which} lacks real glyphs for them: use characters the fonts draw (e.g. A-Z a-z 0-9) or set data.glyphs.fonts=null")
    return tuple(names), np.stack(stacks)


def _recognised(templates: np.ndarray, ref_vecs: np.ndarray) -> float:
    """Share of a font's glyphs whose own character is among the reference glyphs they resemble
    most: the top 3 of 52 letters, the same share of a smaller set (at least the top 1)."""
    top = max(1, round(len(templates) * 3 / 52))
    sim = np.stack([_coarse(t) for t in templates]) @ ref_vecs.T
    own = sim[np.arange(len(sim)), np.arange(len(sim))]
    return float(np.mean((sim > own[:, None]).sum(1) < top))


def _glyphs_of(path: Path, chars: str) -> np.ndarray | None:
    """Templates [char, 64, 64] of one font, or None when it lacks a real glyph for any character."""
    missing = _render(path, MISSING_PROBE)
    inks = [_render(path, c) for c in chars]
    if any(ink.size == 0 or (ink.shape == missing.shape and np.array_equal(ink, missing)) for ink in inks):
        return None
    templates = np.stack([_fit(ink) for ink in inks])
    if len({t.tobytes() for t in (templates > 0.5)}) < len(chars):
        return None  # two characters draw the same shape: a fallback box, not glyphs
    return templates


# -------------------------------------------------------------------------------------- rendering
def _warp_matrices(rng: np.random.Generator, n: int, s: GlyphSettings) -> torch.Tensor:
    """Inverse affine maps (output -> template coordinates) for affine_grid: rotation, slant, scale,
    width change and shift, each drawn uniformly."""
    angle = np.radians(rng.uniform(-s.rotation, s.rotation, n))
    shear = rng.uniform(-s.shear, s.shear, n)
    scale = rng.uniform(s.scale[0], s.scale[1], n)
    aspect = 1 + rng.uniform(-s.aspect, s.aspect, n)
    shift = rng.uniform(-s.translate, s.translate, (n, 2)) * 2  # normalised coordinates span 2
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    slant = np.zeros((n, 2, 2))
    slant[:, 0, 0] = slant[:, 1, 1] = 1
    slant[:, 0, 1] = shear
    size = np.zeros((n, 2, 2))
    size[:, 0, 0], size[:, 1, 1] = scale * aspect, scale
    forward = rot @ slant @ size
    inverse = np.linalg.inv(forward)
    offset = -(inverse @ shift[:, :, None])
    return torch.from_numpy(np.concatenate([inverse, offset], axis=2)).float()


def _thicken(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation by each example's own radius (0 = unchanged)."""
    out = x.clone()
    for r in radius.unique().tolist():
        if r > 0:
            sel = radius == r
            out[sel] = F.max_pool2d(x[sel], 2 * r + 1, stride=1, padding=r)
    return out


def _blur(x: torch.Tensor, sigma: torch.Tensor, most: float) -> torch.Tensor:
    """Gaussian blur with each example's own sigma: one grouped convolution over the chunk."""
    if most <= 0:
        return x
    half = max(1, int(np.ceil(3 * most)))
    taps = torch.arange(-half, half + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    n, _, h, w = x.shape
    flat = x.view(1, n, h, w)
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0)), kernel[:, None, None, :], groups=n)
    flat = F.conv2d(F.pad(flat, (0, 0, half, half)), kernel[:, None, :, None], groups=n)
    return flat.view(n, 1, h, w)


def _draw(templates: torch.Tensor, theta: torch.Tensor, radius: torch.Tensor, sigma: torch.Tensor,
          noise: torch.Tensor, s: GlyphSettings) -> torch.Tensor:
    """One chunk: warp to the bitmap, thicken, blur, add noise, threshold, count ink per grid cell."""
    n = templates.shape[0]
    grid = F.affine_grid(theta, [n, 1, s.bitmap, s.bitmap], align_corners=False)
    x = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = _blur(_thicken(x, radius), sigma, s.blur) + noise
    x = (x > s.threshold).float() if s.threshold is not None else x.clamp(0, 1)
    return F.avg_pool2d(x, s.oversample) * s.levels


def render_glyphs(s: GlyphSettings) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images [n, grid, grid] with values 0..levels, labels [n] = index into s.chars, fonts used).

    Deterministic in the settings: the same seed gives the same images, on any machine with the
    same fonts. Classes are balanced (n // k or one more each); fonts are drawn uniformly."""
    names, templates = font_templates(s.chars, s.fonts)
    k, n_fonts = len(s.chars), len(names)
    rng = np.random.default_rng(s.seed)
    labels = rng.permutation(np.arange(s.n) % k).astype(np.int64)
    font = rng.integers(0, n_fonts, s.n)
    theta = _warp_matrices(rng, s.n, s)
    radius = torch.from_numpy(rng.integers(s.stroke[0], s.stroke[1] + 1, s.n))
    sigma = torch.from_numpy(rng.uniform(0, s.blur, s.n)).float()
    noise_seed = int(rng.integers(0, 2**31 - 1))
    table = torch.from_numpy(templates).view(n_fonts * k, 1, TEMPLATE_SIZE, TEMPLATE_SIZE)
    which = torch.from_numpy(font * k + labels)
    generator = torch.Generator().manual_seed(noise_seed)
    out = torch.empty(s.n, s.grid, s.grid)
    for start in range(0, s.n, _CHUNK):
        part = slice(start, min(start + _CHUNK, s.n))
        m = part.stop - part.start
        noise = torch.randn(m, 1, s.bitmap, s.bitmap, generator=generator) * s.noise
        out[part] = _draw(table[which[part]], theta[part], radius[part], sigma[part], noise, s)[:, 0]
    return out.round().numpy(), labels, names


_rendered: dict[tuple, tuple[np.ndarray, np.ndarray, tuple[str, ...]]] = {}


def cached_glyphs(s: GlyphSettings) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Rendered once per process for the same settings (like data.load_pool); one set kept at a time."""
    key = s.render_key()
    if key not in _rendered:
        _rendered.clear()
        _rendered[key] = render_glyphs(s)
    return _rendered[key]
