"""A measurement drawn over its radiograph: the picture a reader checks a Norberg angle against.

Both femoral head circles, the head–head line, each head–rim ray, the rim points and each angle written
beside its hip ("L 103.2°", "R 98.7°", and P(big) when the classifier's probability is given). Line
widths and type scale with the image (studies range from 256 to 4,300 px), so an overlay reads the same
at any size. Colours follow the patient's side, not the image side, so a mirrored or rotated study is
still read correctly: patient's left orange, patient's right blue.

Shapes are drawn with OpenCV (anti-aliased, sub-pixel precise); text with Pillow's FreeType default font,
which has the degree sign that OpenCV's Hershey fonts lack. Serving-safe: numpy, OpenCV and Pillow only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hipgen.anatomy import HipKeypoints

Rgb = tuple[int, int, int]

LEFT_COLOUR: Rgb = (255, 165, 40)  # patient's left hip
RIGHT_COLOUR: Rgb = (70, 170, 255)  # patient's right hip
HEAD_LINE_COLOUR: Rgb = (90, 235, 90)  # the head–head line both angles share
RIM_COLOUR: Rgb = (255, 60, 60)  # craniolateral rim points
TEXT_OUTLINE: Rgb = (0, 0, 0)

_SHIFT = 4  # fixed-point bits for cv2 drawing: 1/16-pixel precision
_FAR = 1 << 20  # coordinates are clamped to ±this many pixels so fixed-point values stay in int range


@dataclass(frozen=True)
class OverlayStyle:
    """Sizes in pixels, derived from the image size by :func:`overlay_style`."""

    line: int  # stroke width of circles and lines
    rim_dot: int  # radius of a rim point
    font_px: int  # text height
    gap: int  # distance between a head circle and its text


def overlay_style(height: int, width: int) -> OverlayStyle:
    """Sizes proportional to the shorter side: 1-px lines and 12-px text at 256 px, ~12-px lines and
    ~190-px text at 4,300 px (a reader zooms a big study out, so everything must scale with it)."""
    base = max(1, min(height, width))
    line = max(1, round(base / 360))
    return OverlayStyle(
        line=line,
        rim_dot=max(2, round(2.2 * line)),
        font_px=max(12, round(base * 0.045)),
        gap=max(3, round(base * 0.012)),
    )


def display_grey(pixels: np.ndarray) -> np.ndarray:
    """uint8 grey for viewing: a 0.5–99.5 percentile window, so a 12-bit study stored in 16 bits (or a
    raw float image using a narrow part of [0, 1]) is not drawn black; flat images are drawn as is."""
    a = np.nan_to_num(np.asarray(pixels, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if a.ndim != 2:
        raise ValueError(f"pixels must be a 2-D grey image, got shape {a.shape}")
    lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    return np.round(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def draw_overlay(
    pixels: np.ndarray,
    kp: HipKeypoints,
    *,
    na_left: float,
    na_right: float,
    prob_big_left: float | None = None,
    prob_big_right: float | None = None,
) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` copy of the grey ``pixels`` ``(H, W)`` with ``kp`` (pixels of that image)
    drawn over it. The angles are passed in rather than recomputed, so the picture states exactly the
    numbers the caller reports; non-finite points or values are left out instead of failing."""
    grey = display_grey(pixels)
    h, w = grey.shape
    style = overlay_style(h, w)
    rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    _draw_shapes(rgb, kp, style)
    return _draw_texts(rgb, kp, style, na_left, na_right, prob_big_left, prob_big_right)


def overlay_png(
    pixels: np.ndarray,
    kp: HipKeypoints,
    *,
    na_left: float,
    na_right: float,
    prob_big_left: float | None = None,
    prob_big_right: float | None = None,
) -> bytes:
    """:func:`draw_overlay` encoded as an 8-bit RGB PNG."""
    rgb = draw_overlay(
        pixels,
        kp,
        na_left=na_left,
        na_right=na_right,
        prob_big_left=prob_big_left,
        prob_big_right=prob_big_right,
    )
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise RuntimeError("PNG encoding of the overlay failed")
    return buf.tobytes()


# --- shapes -----------------------------------------------------------------------------------------
def _finite(*values: float) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def _fixed(p: tuple[float, float]) -> tuple[int, int]:
    """A point in cv2's fixed-point coordinates (``shift=_SHIFT``), clamped far outside any image."""
    return tuple(int(round(min(max(float(v), -_FAR), _FAR) * (1 << _SHIFT))) for v in p)  # type: ignore[return-value]


def _draw_shapes(rgb: np.ndarray, kp: HipKeypoints, style: OverlayStyle) -> None:
    aa, t = cv2.LINE_AA, style.line
    if _finite(*kp.left_head, *kp.right_head):
        cv2.line(rgb, _fixed(kp.left_head), _fixed(kp.right_head), HEAD_LINE_COLOUR, t, aa, _SHIFT)
    for side, colour in (("left", LEFT_COLOUR), ("right", RIGHT_COLOUR)):
        head, rim = getattr(kp, f"{side}_head"), getattr(kp, f"{side}_rim")
        radius = float(getattr(kp, f"{side}_radius"))
        if _finite(*head, radius) and radius > 0:
            r = int(round(min(radius, _FAR) * (1 << _SHIFT)))
            cv2.circle(rgb, _fixed(head), r, colour, t, aa, _SHIFT)
        if _finite(*head, *rim):
            cv2.line(rgb, _fixed(head), _fixed(rim), colour, t, aa, _SHIFT)
        if _finite(*rim):
            cv2.circle(rgb, _fixed(rim), style.rim_dot << _SHIFT, RIM_COLOUR, -1, aa, _SHIFT)
        if _finite(*head):
            cv2.circle(rgb, _fixed(head), max(1, style.rim_dot // 2) << _SHIFT, colour, -1, aa, _SHIFT)


# --- text -------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _label(side: str, na: float, prob: float | None) -> str:
    text = f"{side} {na:.1f}°" if math.isfinite(na) else f"{side} –"
    if prob is not None and math.isfinite(prob):
        text += f"\nP(big) {prob:.2f}"
    return text


def _text_anchor(
    head: tuple[float, float], other: tuple[float, float], radius: float, fallback: float
) -> tuple[float, float, float, float]:
    """Where a hip's text goes: beside the head on the side away from the other head (lateral), at
    ``radius`` from its centre. Returns the point and the unit direction (x, y)."""
    dx, dy = head[0] - other[0], head[1] - other[1]
    n = math.hypot(dx, dy)
    ux, uy = (dx / n, dy / n) if _finite(dx, dy) and n > 1e-6 else (fallback, 0.0)
    return head[0] + ux * radius, head[1] + uy * radius, ux, uy


def _draw_texts(
    rgb: np.ndarray,
    kp: HipKeypoints,
    style: OverlayStyle,
    na_left: float,
    na_right: float,
    prob_left: float | None,
    prob_right: float | None,
) -> np.ndarray:
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    font = _font(style.font_px)
    stroke = max(1, style.font_px // 10)
    hips = (
        ("L", kp.left_head, kp.right_head, kp.left_radius, na_left, prob_left, LEFT_COLOUR, 1.0),
        ("R", kp.right_head, kp.left_head, kp.right_radius, na_right, prob_right, RIGHT_COLOUR, -1.0),
    )
    for side, head, other, radius, na, prob, colour, fallback in hips:
        if not _finite(*head):
            continue
        r = float(radius) if _finite(radius) and radius > 0 else 0.0
        text = _label(side, float(na), prob)
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font, stroke_width=stroke, spacing=2)
        tw, th = x1 - x0, y1 - y0
        ax, ay, ux, uy = _text_anchor(head, other, min(r, max(h, w)) + style.gap, fallback)
        # centre of the text box: pushed out along the lateral direction by half its extent
        cx = ax + ux * tw / 2
        cy = ay + uy * th / 2
        left = int(round(min(max(cx - tw / 2, 0), max(w - tw, 0)))) - x0
        top = int(round(min(max(cy - th / 2, 0), max(h - th, 0)))) - y0
        draw.multiline_text(
            (left, top),
            text,
            font=font,
            fill=colour,
            stroke_width=stroke,
            stroke_fill=TEXT_OUTLINE,
            spacing=2,
        )
    return np.asarray(img)
