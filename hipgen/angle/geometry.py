"""Pure geometry of the two-stage angle model: the letterboxed whole view the locator sees and the
hip-aligned crops the keypoint model sees, with the affine maps between them and the original pixels.

Why two stages: in a whole-pelvis view the femoral head radius is ≈ 3.6 % of the image width
(reference/vd-hip-anatomy.md), so at a 256-px model input the rim sits ≈ 10 px from the head centre and
one pixel of error is ≈ 5.5° of Norberg angle. The locator finds both head centres on the whole view;
the keypoint model then measures each hip in a crop cut from the *original* pixels at a scale set by the
inter-head distance, where the head radius is ≈ 23 px.

Each crop is a *hip frame*: centred on one head, x along the line to the other head, y caudal. For the
patient's left hip the frame is mirrored, so that both hips look like a right hip in an upright view and
one model serves both sides. Because the frame follows the head-to-head line, in-plane rotation of the
study (including 90° turns) does not reach the keypoint model.

All matrices are 2×3 affines ``[A | t]`` mapping (x, y) of one grid to the next; pixel centres sit at
integer coordinates (DESIGN §1).
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

Side = Literal["left", "right"]
Point = tuple[float, float]

LOCATOR_SIZE = 192  # pixels of the square whole-view input (head centres need ≈ 1 % of the width)
CROP_SIZE = 128  # pixels of the square hip crop
# crop side / inter-head distance: ±2 head radii around the head centre. 0.45 rather than 0.6: the same
# 128 px then sample the rim 1.33× finer, which took the default model from MAE 1.25° to 1.00°.
CROP_SPAN = 0.45


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` points through a 2×3 affine."""
    m = np.asarray(matrix, np.float64)
    p = np.asarray(points, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def affine_scale(matrix: np.ndarray) -> float:
    """Isotropic scale of a similarity transform (lengths such as radii multiply by it)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def compose(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The affine that applies ``first`` and then ``second``."""
    a = np.vstack([np.asarray(first, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(second, np.float64), [0.0, 0.0, 1.0]])
    return (b @ a)[:2]


def normalize_intensity(pixels: np.ndarray) -> np.ndarray:
    """Percentile 1–99 window to [0, 1]: exposure, bit depth and display LUT differ between studies."""
    a = np.asarray(pixels, np.float32)
    lo, hi = np.percentile(a, [1.0, 99.0])
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def shrink(pixels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the image down before a warp that shrinks by ``scale`` < 0.8 (``warpAffine`` has no
    anti-aliasing, so a 4,000-px study warped straight to 128 px would alias). Returns the image and
    the matrix original → shrunk (identity when nothing was done)."""
    if scale >= 0.8:
        return pixels, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    h, w = pixels.shape
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(np.ascontiguousarray(pixels, np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    return small, np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def warp(pixels: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``size``×``size`` output of the affine ``matrix`` (original → output), anti-aliased when it shrinks;
    outside the image is 0."""
    m = np.asarray(matrix, np.float64)
    small, pre = shrink(np.asarray(pixels, np.float32), affine_scale(m))
    m = compose(m, invert_affine(pre))
    return cv2.warpAffine(
        small, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )


def letterbox_matrix(height: int, width: int, size: int = LOCATOR_SIZE) -> np.ndarray:
    """Original → square model input: scale the longer side to ``size`` and centre (pad the other)."""
    s = size / max(height, width)
    tx = 0.5 * (size - width * s) + 0.5 * s - 0.5
    ty = 0.5 * (size - height * s) + 0.5 * s - 0.5
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def letterbox(pixels: np.ndarray, size: int = LOCATOR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The locator's input (normalised) and the matrix original → input."""
    h, w = pixels.shape
    m = letterbox_matrix(h, w, size)
    return normalize_intensity(warp(pixels, m, size)), m


def hip_frame(
    head: Point, other_head: Point, side: Side, *, size: int = CROP_SIZE, span: float = CROP_SPAN
) -> np.ndarray:
    """Original → hip crop: ``head`` at the crop centre, x towards ``other_head``, y caudal, one crop
    side = ``span`` × the inter-head distance. Mirrored (det < 0) for the left hip."""
    h = np.asarray(head, np.float64)
    e1, e2, dist = _head_axis(h, other_head, "hip frame")
    if side == "left":
        e2 = -e2
    return _square_frame(h, e1, e2, size / (span * dist), size)


def _head_axis(start: np.ndarray, end: Point, what: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit vector from ``start`` to ``end``, that vector turned 90° clockwise on screen (caudal when
    the first is the patient's right-to-left line of an upright view), and the distance."""
    d = np.asarray(end, np.float64) - start
    dist = float(np.hypot(*d))
    if not math.isfinite(dist) or dist < 1e-6:
        raise ValueError(f"{what} undefined: the two head centres coincide or are not finite")
    e1 = d / dist
    return e1, np.array([-e1[1], e1[0]]), dist


def _square_frame(centre: np.ndarray, e1: np.ndarray, e2: np.ndarray, scale: float, size: int) -> np.ndarray:
    """Original → ``size``² output: axes ``e1``/``e2`` scaled by ``scale``, ``centre`` at its middle."""
    a = scale * np.vstack([e1, e2])
    c = 0.5 * (size - 1)
    return np.hstack([a, (np.array([c, c]) - a @ centre)[:, None]])


PELVIS_SPAN = 2.4  # pelvis view side / inter-head distance: both hips, acetabula and proximal femurs


def pelvis_frame(right_head: Point, left_head: Point, *, size: int, span: float = PELVIS_SPAN) -> np.ndarray:
    """Original → square *pelvis view*: centred between the femoral heads, the head-to-head line
    horizontal with the patient's right head on image left (radiological convention, never mirrored),
    one side = ``span`` × the inter-head distance. Studies stored turned come out upright.

    2.4 because the default angle model measures such views well even at 128 px (MAE 1.5° on tidy
    phantoms; 2.5° at 1.8, whose tighter crop loses the locator; a whole 128-px study gives 8°)."""
    r = np.asarray(right_head, np.float64)
    e1, e2, dist = _head_axis(r, left_head, "pelvis frame")
    return _square_frame(r + 0.5 * dist * e1, e1, e2, size / (span * dist), size)


def crop_scale(inter_head: np.ndarray | float, size: int = CROP_SIZE, span: float = CROP_SPAN) -> np.ndarray:
    """Output pixels per original pixel of a hip frame, from the inter-head distance(s)."""
    return size / (span * np.maximum(np.asarray(inter_head, np.float64), 1.0))


def hip_crop(pixels: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The keypoint model's input for one hip frame (normalised)."""
    return normalize_intensity(warp(pixels, matrix, size))
