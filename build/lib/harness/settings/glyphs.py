"""`data.glyphs`: the glyph source's settings and their checks (the rendering is harness/data/glyphs.py).
Here, below the data layer, so the settings a run is validated against import nothing above them."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from harness.errors import ConfigError

DEFAULT_CHARS = string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class GlyphSettings:
    """`data.glyphs`: what the glyph source renders and how it is split (all of it keys the cache)."""

    n: int = 20000  # examples in all (train + val), classes balanced
    chars: str = DEFAULT_CHARS  # one class per character
    fonts: tuple[str, ...] | None = None  # font file names; None = every usable one matplotlib ships
    seed: int = 0  # rendering and the train/val split
    n_val: int = 1000  # validation examples held out of the glyphs
    image_size: int | None = None  # None = the target's image size
    grid: int = 8  # block-summed grid (scikit-learn digits: 8x8), then resized to image_size
    oversample: int = 4  # bitmap pixels per grid cell side: values run 0..oversample**2 (digits: 0..16)
    rotation: float = 12.0  # max degrees either way
    shear: float = 0.3  # max horizontal shear (slant), either way
    scale: tuple[float, float] = (0.75, 1.0)  # of the template's box (1 = glyph fills the frame)
    aspect: float = 0.15  # max relative width change either way
    translate: float = 0.08  # max shift, as a fraction of the frame, either way
    stroke: tuple[int, int] = (0, 1)  # thickening radius in bitmap pixels, drawn uniformly in [low, high]
    blur: float = 1.0  # max Gaussian sigma in bitmap pixels (drawn uniformly in [0, blur])
    noise: float = 0.1  # std of additive Gaussian noise before thresholding
    threshold: float | None = 0.5  # binarise the bitmap (digits' bitmaps are binary); None = keep grey

    @property
    def levels(self) -> int:
        """The largest block sum: a grid cell whose bitmap pixels are all ink."""
        return self.oversample ** 2

    @property
    def bitmap(self) -> int:
        return self.grid * self.oversample

    def render_key(self) -> tuple:
        """What changes the rendered images (not the split or the final size)."""
        d = asdict(self)
        return tuple((k, d[k]) for k in sorted(d) if k not in ("n_val", "image_size"))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "GlyphSettings":
        """Checked settings from `data.glyphs`; a bad one is a one-line ConfigError naming the fix."""
        raw = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"data.glyphs.{unknown[0]} is not a glyph setting: use one of {sorted(known)}")
        defaults = cls()
        values = {k: raw.get(k, getattr(defaults, k)) for k in known}
        out = cls(
            n=_int(values["n"], "n", 2),
            chars=_chars(values["chars"]),
            fonts=_fonts(values["fonts"]),
            seed=_int(values["seed"], "seed", 0),
            n_val=_int(values["n_val"], "n_val", 1),
            image_size=None if values["image_size"] is None else _int(values["image_size"], "image_size", 2),
            grid=_int(values["grid"], "grid", 2),
            oversample=_int(values["oversample"], "oversample", 1),
            rotation=_number(values["rotation"], "rotation", 0.0, 180.0),
            shear=_number(values["shear"], "shear", 0.0, 2.0),
            scale=_range(values["scale"], "scale", float, 0.05, 4.0),
            aspect=_number(values["aspect"], "aspect", 0.0, 0.9),
            translate=_number(values["translate"], "translate", 0.0, 0.5),
            stroke=_range(values["stroke"], "stroke", int, 0, 8),
            blur=_number(values["blur"], "blur", 0.0, 8.0),
            noise=_number(values["noise"], "noise", 0.0, 1.0),
            threshold=None if values["threshold"] is None else _number(values["threshold"], "threshold", 0.0, 1.0),
        )
        k = len(out.chars)
        if out.n < 2 * k:
            raise ConfigError(f"data.glyphs.n={out.n} gives fewer than 2 examples to each of the {k} characters: use at least {2 * k}")
        if out.n_val < k or out.n_val > out.n - k:
            raise ConfigError(f"data.glyphs.n_val={out.n_val} must lie between the {k} characters and n - {k} = {out.n - k}: set it inside that range")
        return out


# ------------------------------------------------------------------------------- checked values
def _int(value: Any, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"data.glyphs.{key}={value} must be an integer >= {least}: fix data.glyphs.{key}")
    return int(value)


def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ConfigError(f"data.glyphs.{key}={value} must be a number in [{low:g}, {high:g}]: set data.glyphs.{key} inside that range")
    return float(value)


def _range(value: Any, key: str, kind: type, low: float, high: float) -> tuple:
    """[low, high] (or one number for both ends)."""
    items = [value, value] if isinstance(value, (int, float, str)) or value is None else list(value)
    ok = len(items) == 2 and all(not isinstance(v, bool) and isinstance(v, (int, float)) and (kind is float or float(v).is_integer())
                                 for v in items)
    if ok:
        a, b = kind(items[0]), kind(items[1])
        ok = low <= a <= b <= high
    if not ok:
        raise ConfigError(f"data.glyphs.{key}={value} must be [low, high] with {low:g} <= low <= high <= {high:g}"
                          f"{' (integers)' if kind is int else ''}: e.g. data.glyphs.{key}=[{low:g},{high:g}]")
    return (a, b)


def _chars(value: Any) -> str:
    """A string, or a list of single characters; digits-only strings must be quoted in YAML."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and len(v) == 1 for v in value):
        value = "".join(value)
    if not isinstance(value, str) or len(set(value)) < 2 or len(set(value)) != len(value) or any(c.isspace() for c in value):
        raise ConfigError(f"data.glyphs.chars={value!r} must be a string of at least 2 distinct, non-space characters, each once "
                          f"(quote digits): e.g. data.glyphs.chars=ABCDEFabcdef or data.glyphs.chars=\"'0123456789'\"")
    return value


def _fonts(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    available = sorted(p.name for p in font_dir().glob("*.ttf"))
    if not names or not all(isinstance(v, str) for v in names):
        raise ConfigError(f"data.glyphs.fonts={value} must be null (every usable font) or a list of font file names: choose from {available}")
    for name in names:
        if name not in available:
            raise ConfigError(f"data.glyphs.fonts names {name}, which is not in {font_dir()}: choose from {available}")
    return tuple(names)


def font_dir() -> Path:
    """matplotlib's bundled TrueType fonts: present wherever matplotlib is, no download."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"
