"""harness.data.glyphs: printed characters from matplotlib's fonts, warped and reduced to the digits'
8x8 grid of 0..16; fonts without real glyphs are skipped; deterministic, fast, cached."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

import harness.data.glyphs as glyphs
from harness.errors import ConfigError
from harness.data.glyphs import DEFAULT_CHARS, GlyphSettings, cached_glyphs, font_templates, render_glyphs

# No warp, no thickening, no blur, no noise: every example of a (font, character) is its template.
STILL = dict(rotation=0.0, shear=0.0, scale=(1.0, 1.0), aspect=0.0, translate=0.0, stroke=(0, 0), blur=0.0, noise=0.0)


def _small(**kw) -> GlyphSettings:
    return dataclasses.replace(GlyphSettings(n=520), **kw)


# ------------------------------------------------------------------------------------------ fonts
def test_only_fonts_that_draw_every_letter_are_used():
    names, templates = font_templates(DEFAULT_CHARS, None)
    assert templates.shape == (len(names), 52, glyphs.TEMPLATE_SIZE, glyphs.TEMPLATE_SIZE)
    assert {"DejaVuSans.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "cmr10.ttf", "cmtt10.ttf"} <= set(names)
    # no glyphs at all (Display, STIX size/non-unicode variants), one box for everything (LastResort),
    # letters mapped to other symbols (cmex10, cmsy10)
    for dropped in ("DejaVuSansDisplay.ttf", "STIXSizOneSymReg.ttf", "STIXNonUni.ttf", "LastResortHE-Regular.ttf",
                    "cmex10.ttf", "cmsy10.ttf"):
        assert dropped not in names, dropped
    assert len(names) >= 18
    assert (templates.reshape(len(names), 52, -1).max(-1) > 0.5).all()  # every template has ink


def test_a_character_the_fonts_lack_drops_them_and_none_left_is_a_config_error():
    # U+4E00 (a CJK ideograph): none of matplotlib's fonts has it; DejaVu draws its missing-glyph
    # box there, STIX nothing, so neither may pass as a glyph
    with pytest.raises(ConfigError, match="lacks real glyphs") as err:
        font_templates("AB\u4e00", None)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="lacks real glyphs"):
        font_templates("AB", ("LastResortHE-Regular.ttf",))  # one box for every character
    names, _ = font_templates("ABCDEFGHIJ", ("DejaVuSans.ttf", "cmex10.ttf", "DejaVuSansDisplay.ttf", "cmr10.ttf"))
    assert names == ("DejaVuSans.ttf", "cmr10.ttf")


def test_the_missing_glyph_box_is_recognised():
    path = glyphs.font_dir() / "DejaVuSans.ttf"
    box = glyphs._render(path, glyphs.MISSING_PROBE)
    assert box.size > 0  # DejaVu draws a box for what it lacks: non-empty, so emptiness alone would pass it
    assert np.array_equal(glyphs._render(path, "\u4e00"), box)
    assert glyphs._glyphs_of(path, "A\u4e00") is None and glyphs._glyphs_of(path, "AB") is not None


# -------------------------------------------------------------------------------------- rendering
def test_glyphs_are_an_8x8_grid_of_block_counts_0_to_16_with_balanced_classes():
    x, y, names = render_glyphs(_small())
    assert x.shape == (520, 8, 8) and y.shape == (520,)
    assert np.array_equal(x, np.round(x)) and x.min() == 0 and x.max() == 16
    assert np.array_equal(np.bincount(y, minlength=52), np.full(52, 10))
    assert len(names) >= 18
    other = render_glyphs(_small(grid=6, oversample=3, n=104))[0]
    assert other.shape == (104, 6, 6) and other.max() == 9


def test_ink_and_frame_match_scikit_learns_digits():
    """Calibrated: the default stroke gives the digits' mean ink and share of full cells."""
    from sklearn.datasets import load_digits

    digits = load_digits().images
    x, _, _ = render_glyphs(GlyphSettings(n=5200))
    assert abs(x.mean() - digits.mean()) < 1.0, (x.mean(), digits.mean())
    assert abs((x == 16).mean() - (digits == 16).mean()) < 0.05
    assert abs((x == 0).mean() - (digits == 0).mean()) < 0.12


def test_rendering_is_deterministic_in_the_seed():
    a, ya, _ = render_glyphs(_small())
    b, yb, _ = render_glyphs(_small())
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    c, yc, _ = render_glyphs(_small(seed=1))
    assert not np.array_equal(a, c) and not np.array_equal(ya, yc)


def test_each_distortion_changes_the_images():
    one_font = ("DejaVuSans.ttf",)
    still, y, _ = render_glyphs(_small(fonts=one_font, **STILL))
    for c in range(52):  # without distortions every example of a character is the same image
        assert (still[y == c] == still[y == c][0]).all()
    for knob in (dict(rotation=20.0), dict(shear=0.4), dict(scale=(0.6, 0.9)), dict(aspect=0.3),
                 dict(translate=0.15), dict(stroke=(1, 1)), dict(blur=1.5), dict(noise=0.3)):
        moved, y2, _ = render_glyphs(_small(fonts=one_font, **{**STILL, **knob}))
        assert np.array_equal(y, y2)
        assert not np.array_equal(moved, still), knob
    thick = render_glyphs(_small(fonts=one_font, **{**STILL, "stroke": (1, 1)}))[0]
    assert thick.mean() > still.mean() * 1.3  # thickening adds ink
    grey = render_glyphs(_small(fonts=one_font, **{**STILL, "threshold": None}))[0]
    assert not np.array_equal(grey, still)  # antialiased edges count part of a pixel


def test_twenty_thousand_glyphs_render_in_well_under_a_minute():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        font_templates(DEFAULT_CHARS, None)  # the fonts' screening is cached; time the glyphs themselves
        started = time.perf_counter()
        x, _, _ = render_glyphs(GlyphSettings(n=20000))
        elapsed = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    assert x.shape == (20000, 8, 8)
    assert elapsed < 60, f"{elapsed:.1f} s"  # about 1.5 s on a quiet core: the margin allows a busy machine


def test_glyphs_are_rendered_once_per_process(monkeypatch):
    calls = []
    real = glyphs.render_glyphs
    monkeypatch.setattr(glyphs, "render_glyphs", lambda s: calls.append(s) or real(s))
    monkeypatch.setattr(glyphs, "_rendered", {})
    first = cached_glyphs(_small())
    again = cached_glyphs(dataclasses.replace(_small(), n_val=60, image_size=16))  # split and size: same images
    assert len(calls) == 1 and again[0] is first[0]
    cached_glyphs(_small(seed=3))
    assert len(calls) == 2


# --------------------------------------------------------------------------------------- settings
def test_settings_from_config_take_defaults_and_lists():
    s = GlyphSettings.from_config({"n": 1000, "n_val": 100, "stroke": [0, 2], "scale": [0.5, 1], "chars": ["A", "b"], "fonts": ["cmr10.ttf"]})
    assert s.n == 1000 and s.stroke == (0, 2) and s.scale == (0.5, 1.0) and s.chars == "Ab" and s.fonts == ("cmr10.ttf",)
    assert GlyphSettings.from_config(None) == GlyphSettings()
    assert GlyphSettings.from_config({"stroke": 1}).stroke == (1, 1)


@pytest.mark.parametrize("settings, message", [
    ({"n": 0}, r"data\.glyphs\.n=0 must be an integer >= 2"),
    ({"n": 60}, r"fewer than 2 examples to each of the 52"),
    ({"n_val": 10}, r"data\.glyphs\.n_val=10 must lie between"),
    ({"chars": "AAB"}, r"data\.glyphs\.chars='AAB' must be"),
    ({"chars": 123}, r"quote digits"),
    ({"rotation": -5}, r"data\.glyphs\.rotation=-5 must be a number in \[0, 180\]"),
    ({"stroke": [2, 1]}, r"data\.glyphs\.stroke=\[2, 1\] must be \[low, high\]"),
    ({"stroke": [0.5, 1]}, r"integers"),
    ({"scale": "big"}, r"data\.glyphs\.scale=big"),
    ({"fonts": ["Comic.ttf"]}, r"data\.glyphs\.fonts names Comic\.ttf, which is not in"),
    ({"colour": 1}, r"data\.glyphs\.colour is not a glyph setting"),
    ({"threshold": True}, r"data\.glyphs\.threshold=True"),
])
def test_a_bad_setting_is_a_one_line_config_error(settings, message):
    with pytest.raises(ConfigError, match=message) as err:
        GlyphSettings.from_config(settings)
    assert "\n" not in str(err.value)
