"""The measurement overlay: an RGB picture of the input's size whose drawing sits on the keypoints and
scales with the image."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from hipgen.anatomy import HipKeypoints
from hipgen.angle.overlay import display_grey, draw_overlay, overlay_png, overlay_style
from hipgen.phantom import PhantomSpec, render_phantom


def _sample(width: int, height: int, orientation: int = 0):
    return render_phantom(PhantomSpec(width=width, height=height, orientation=orientation), seed=4)


def _overlay(sample, **kw) -> np.ndarray:
    kp = sample.keypoints
    return draw_overlay(sample.pixels, kp, na_left=kp.na_left, na_right=kp.na_right, **kw)


def _changed(sample, **kw) -> np.ndarray:
    """Boolean (H, W): where the overlay differs from the plain grey picture."""
    grey = display_grey(sample.pixels)
    return np.any(_overlay(sample, **kw) != grey[:, :, None], axis=2)


@pytest.mark.parametrize(("width", "height", "orientation"), [(256, 256, 0), (320, 256, 0), (256, 320, 90)])
def test_overlay_is_rgb_uint8_of_the_input_size(width: int, height: int, orientation: int):
    sample = _sample(width, height, orientation)
    out = _overlay(sample, prob_big_left=0.2, prob_big_right=0.9)
    assert out.dtype == np.uint8 and out.shape == (*sample.pixels.shape, 3)


def test_drawing_sits_on_the_keypoints():
    sample = _sample(384, 384)
    kp = sample.keypoints
    changed = _changed(sample)
    h, w = changed.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for side in ("left", "right"):
        (hx, hy), r = getattr(kp, f"{side}_head"), getattr(kp, f"{side}_radius")
        ring = np.abs(np.hypot(xx - hx, yy - hy) - r) < 1.5
        assert changed[ring].mean() > 0.8, side  # the head circle is drawn
        rx, ry = getattr(kp, f"{side}_rim")
        assert changed[int(round(ry)), int(round(rx))]  # the rim point is drawn
    mid = (np.add(kp.left_head, kp.right_head) / 2).round().astype(int)
    assert changed[mid[1], mid[0]]  # the head–head line passes through the midpoint
    assert not changed[int(0.9 * h) :, int(0.4 * w) : int(0.6 * w)].any()  # far from the hips: untouched


def test_angle_text_is_written_beside_each_hip():
    sample = _sample(384, 384)
    kp = sample.keypoints
    changed = _changed(sample)
    for side, sign in (("left", 1), ("right", -1)):  # the patient's left is on the image right
        hx, hy = getattr(kp, f"{side}_head")
        r = getattr(kp, f"{side}_radius")
        x0 = int(hx + sign * (r + 4))
        band = changed[int(hy - 2 * r) : int(hy + 2 * r), min(x0, x0 + sign * 60) : max(x0, x0 + sign * 60)]
        assert band.mean() > 0.05, side


def test_style_and_drawing_scale_with_the_image():
    assert overlay_style(256, 256).line == 1 and overlay_style(4300, 4300).line >= 10
    assert (
        overlay_style(256, 256).font_px
        < overlay_style(1024, 1024).font_px
        < overlay_style(4300, 4300).font_px
    )
    assert overlay_style(300, 4000) == overlay_style(300, 300)  # the shorter side decides
    small, large = (_changed(_sample(n, n)).mean() for n in (256, 1024))
    assert 0.5 < large / small < 2.0  # the drawing covers about the same share of the picture


def test_png_round_trips_and_bad_points_do_not_crash():
    sample = _sample(256, 256)
    kp = sample.keypoints
    png = overlay_png(sample.pixels, kp, na_left=kp.na_left, na_right=kp.na_right, prob_big_left=0.5)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (256, 256)
    assert np.array_equal(np.asarray(img), _overlay(sample, prob_big_left=0.5))
    nan = (math.nan, math.nan)
    odd = HipKeypoints(nan, (1e12, -1e12), (5.0, 5.0), nan, math.inf, -3.0)
    out = draw_overlay(sample.pixels, odd, na_left=math.nan, na_right=100.0)
    assert out.shape == (256, 256, 3)


def test_a_dim_image_is_windowed_for_display():
    """A 12-bit study stored in 16 bits uses 1/16 of [0, 1]: it must not be drawn black."""
    sample = _sample(256, 256)
    grey = display_grey(sample.pixels * (4095 / 65535))
    assert grey.max() == 255 and grey.min() == 0
    assert display_grey(np.full((64, 64), 0.5, np.float32)).max() == 128  # a flat image is drawn as is
