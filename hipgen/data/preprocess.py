"""Deterministic preprocessing (DESIGN §1; published-methods §D, §E): square by centre crop or pad, resize
to a power of two (or a given size), CLAHE, intensity normalisation.

Each step is a small frozen dataclass (settings in ``__init__``, work in ``__call__``, MONAI-transform
style) that maps ``(pixels, record)`` to new ``(pixels, record)``: geometric steps move the keypoints
with the pixels through one affine matrix, so labels can never drift from the image. Pixel centres sit
at integer coordinates (DESIGN §1), hence the half-pixel terms in the resize matrix. ``describe()``
gives the JSON-able record of the steps that goes into the manifest, and ``from_description`` rebuilds
the same pipeline from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from hipgen.data.images import to_uint
from hipgen.data.record import LabelRecord
from hipgen.errors import LabelError

Sample = tuple[np.ndarray, LabelRecord | None]


class Step(Protocol):
    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample: ...


def _move(record: LabelRecord | None, matrix: np.ndarray, shape: tuple[int, ...]) -> LabelRecord | None:
    """The record with its keypoints mapped by ``matrix``; a point that leaves the image is an error
    (a crop that cuts off a hip would otherwise yield a label for a joint the image no longer shows)."""
    if record is None:
        return None
    kp = record.keypoints().transformed(matrix)
    h, w = shape
    for name in ("left_head", "right_head", "left_rim", "right_rim"):
        x, y = getattr(kp, name)
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise LabelError(record.file_name, f"{name} ({x:.1f}, {y:.1f}) falls outside the {w}x{h} image")
    return record.with_keypoints(kp)


def _describe(step: Any) -> dict[str, Any]:
    return {"step": type(step).__name__, **asdict(step)}


@dataclass(frozen=True)
class ToSquare:
    """Centre crop to the shorter side, or pad to the longer side with ``pad_value``."""

    mode: Literal["crop", "pad"] = "crop"
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "pad"):
            raise ValueError(f"mode must be 'crop' or 'pad', got {self.mode!r}")

    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample:
        h, w = pixels.shape
        if self.mode == "crop":
            s = min(h, w)
            y0, x0 = (h - s) // 2, (w - s) // 2
            out = pixels[y0 : y0 + s, x0 : x0 + s].copy()
            dx, dy = -x0, -y0
        else:
            s = max(h, w)
            dy, dx = (s - h) // 2, (s - w) // 2
            out = np.full((s, s), self.pad_value, dtype=np.float32)
            out[dy : dy + h, dx : dx + w] = pixels
        return out, _move(record, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), out.shape)

    def describe(self) -> dict[str, Any]:
        return _describe(self)


@dataclass(frozen=True)
class Resize:
    """Resize to ``size``×``size``; ``size=None`` picks the largest power of two ≤ the longer side.
    ``INTER_AREA`` when shrinking (no aliasing), ``INTER_LINEAR`` when enlarging. A non-square input
    is stretched, which changes its angles (the record is re-measured): square it first."""

    size: int | None = None

    def target(self, h: int, w: int) -> int:
        if self.size is not None:
            if self.size < 1:
                raise ValueError(f"size must be ≥ 1, got {self.size}")
            return self.size
        return 2 ** int(math.floor(math.log2(max(h, w))))

    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample:
        h, w = pixels.shape
        s = self.target(h, w)
        if (h, w) == (s, s):
            return pixels.copy(), record
        interp = cv2.INTER_AREA if s <= min(h, w) else cv2.INTER_LINEAR
        out = cv2.resize(np.ascontiguousarray(pixels, dtype=np.float32), (s, s), interpolation=interp)
        sx, sy = s / w, s / h
        m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        return out, _move(record, m, out.shape)

    def describe(self) -> dict[str, Any]:
        return _describe(self)


@dataclass(frozen=True)
class Clahe:
    """Contrast-limited adaptive histogram equalisation, on 16-bit values so that no precision is lost
    to an 8-bit round trip. Geometry is unchanged."""

    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)

    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample:
        clahe = cv2.createCLAHE(clipLimit=float(self.clip_limit), tileGridSize=tuple(self.tile_grid))
        return clahe.apply(to_uint(pixels, 16)).astype(np.float32) / np.float32(65535.0), record

    def describe(self) -> dict[str, Any]:
        return _describe(self)


@dataclass(frozen=True)
class Normalize:
    """``minmax`` and ``percentile`` (clip to the ``lower``/``upper`` percentiles) map to [0, 1];
    ``zscore`` gives mean 0, sd 1 — a model input, no longer an image in [0, 1] (writers clip)."""

    method: Literal["minmax", "percentile", "zscore"] = "minmax"
    lower: float = 1.0
    upper: float = 99.0

    def __post_init__(self) -> None:
        if self.method not in ("minmax", "percentile", "zscore"):
            raise ValueError(f"method must be minmax, percentile or zscore, got {self.method!r}")
        if not 0.0 <= self.lower < self.upper <= 100.0:
            raise ValueError(f"need 0 ≤ lower < upper ≤ 100, got {self.lower}, {self.upper}")

    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample:
        a = pixels.astype(np.float64)
        if self.method == "zscore":
            sd = a.std()
            out = (a - a.mean()) / sd if sd > 0 else np.zeros_like(a)
        else:
            lo, hi = (
                (a.min(), a.max()) if self.method == "minmax" else np.percentile(a, [self.lower, self.upper])
            )
            out = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)
        return out.astype(np.float32), record

    def describe(self) -> dict[str, Any]:
        return _describe(self)


STEPS: dict[str, type] = {c.__name__: c for c in (ToSquare, Resize, Clahe, Normalize)}


class Preprocessing:
    """Steps applied in order; ``describe()`` is what the manifest records."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    def __call__(self, pixels: np.ndarray, record: LabelRecord | None = None) -> Sample:
        a = np.asarray(pixels)
        if a.ndim != 2 or a.dtype.kind != "f":
            raise ValueError(f"pixels must be a float (H, W) array, got {a.dtype} {a.shape}")
        a = a.astype(np.float32, copy=False)
        for step in self.steps:
            a, record = step(a, record)
        return a, record

    def describe(self) -> dict[str, Any]:
        return {"steps": [s.describe() for s in self.steps]}  # type: ignore[attr-defined]

    @classmethod
    def from_description(cls, desc: Mapping[str, Any]) -> Preprocessing:
        steps = []
        for d in desc["steps"]:
            d = dict(d)
            name = d.pop("step")
            if name not in STEPS:
                raise ValueError(f"unknown preprocessing step {name!r}; known: {', '.join(STEPS)}")
            steps.append(STEPS[name](**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}))
        return cls(steps)

    @classmethod
    def standard(
        cls,
        *,
        square: Literal["crop", "pad"] = "crop",
        size: int | None = None,
        clahe: bool = False,
        normalize: str | None = "minmax",
    ) -> Preprocessing:
        """The published pipelines' order: square, resize, optional CLAHE, normalisation."""
        steps: list[Step] = [ToSquare(square), Resize(size)]
        if clahe:
            steps.append(Clahe())
        if normalize:
            steps.append(Normalize(normalize))  # type: ignore[arg-type]
        return cls(steps)

    def __repr__(self) -> str:
        return f"Preprocessing({list(self.steps)!r})"
