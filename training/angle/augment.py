"""Keypoint-aware augmentation true to radiographs: every geometric change is one affine applied to
pixels and labels together; intensity changes mimic exposure, processing and detector noise.

- Locator (whole view): any multiple of 90° (studies are stored turned), small rotation, scale and
  shift, and a horizontal flip that **swaps the left and right labels** — after a flip the hip on image
  left is still the one the model must call "right" (radiological convention).
- Hip crops: the hip frame is built from head centres perturbed like a locator's error (offset, axis
  angle, scale), so the keypoint model learns to measure from an imperfect frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from hipgen.anatomy import DEFAULT_THRESHOLD_DEG, norberg_angle
from hipgen.angle.geometry import (
    affine_scale,
    apply_affine,
    compose,
    hip_frame,
    letterbox_matrix,
    normalize_intensity,
    warp,
)

RIGHT, LEFT = 0, 1


def intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure/processing/noise on a [0, 1] image: gamma, window, blur or sharpening, Gaussian noise."""
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    x = (x - 0.5) * rng.uniform(0.75, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
    r = rng.random()
    if r < 0.25:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
    elif r < 0.4:
        b = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5)
        x = x + rng.uniform(0.3, 1.0) * (x - b)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.04), x.shape)
    return normalize_intensity(np.clip(x, 0.0, 1.0).astype(np.float32))


def rotation_about(center: float, deg: float, scale: float = 1.0, flip: bool = False) -> np.ndarray:
    """Square-canvas affine: optional mirror, then rotate by ``deg`` (clockwise on screen) and scale
    about the canvas centre."""
    a = math.radians(deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if flip:
        r = r @ np.diag([-1.0, 1.0])
    c = np.array([center, center])
    return np.hstack([r, (c - r @ c)[:, None]])


def locator_sample(
    image: np.ndarray,
    points: np.ndarray,
    rng: np.random.Generator | None,
    size: int,
    *,
    flip: bool | None = None,
    quarter_turns: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(input (S, S), head targets (2, 2) [right, left] in input pixels). ``rng=None`` gives the plain
    letterbox used at inference; ``flip``/``quarter_turns`` force those choices (tests)."""
    h, w = image.shape
    m = letterbox_matrix(h, w, size)
    heads = np.asarray(points, np.float64)[:2]
    if rng is not None:
        flip = bool(rng.random() < 0.5) if flip is None else flip
        k = int(rng.integers(4)) if quarter_turns is None else quarter_turns
        aug = rotation_about(
            0.5 * (size - 1), 90.0 * k + rng.normal(0, 6.0), math.exp(rng.normal(0, 0.1)), flip
        )
        aug[:, 2] += rng.normal(0, 0.04 * size, 2)
        m = compose(aug, m)
        if flip:
            heads = heads[[LEFT, RIGHT]]
    target = apply_affine(m, heads)
    x = warp(image, m, size)
    x = intensity(x, rng) if rng is not None else normalize_intensity(x)
    return x, target


def crop_sample(
    image: np.ndarray,
    points: np.ndarray,
    radii: np.ndarray,
    side: int,
    rng: np.random.Generator | None,
    size: int,
    span: float,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(crop (S, S), [head, rim] (2, 2) in crop pixels, radius in crop pixels, big ∈ {0, 1})."""
    p = np.asarray(points, np.float64)
    head, other, rim = p[side], p[1 - side], p[2 + side]
    if rng is not None:
        d = float(np.hypot(*(other - head)))
        head_j = head + rng.normal(0, 0.03 * d, 2) * (rng.random() < 0.7)
        other_j = other + rng.normal(0, 0.04 * d, 2)
        sp = span * math.exp(rng.normal(0, 0.08))
    else:
        head_j, other_j, sp = head, other, span
    m = hip_frame(tuple(head_j), tuple(other_j), "right" if side == RIGHT else "left", size=size, span=sp)
    target = apply_affine(m, np.stack([head, rim]))
    r = float(radii[side]) * affine_scale(m)
    na = norberg_angle(tuple(head), tuple(other), tuple(rim))
    x = warp(image, m, size)
    x = intensity(x, rng) if rng is not None else normalize_intensity(x)
    return x, target, r, float(na >= DEFAULT_THRESHOLD_DEG)
