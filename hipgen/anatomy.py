"""Norberg-angle geometry, the published label layout, grading tables and the Big/Small class.

Pure functions on keypoints. Image convention (DESIGN §1): pixels of the file, origin top-left,
x right, y down, pixel centres at integer coordinates; *left* and *right* always mean the patient's
side, whatever the image orientation.

The Norberg angle (NA) of one hip is the angle at its femoral head centre between the line to the
contralateral head centre and the line to the craniolateral rim of its own acetabulum. It is an
unsigned angle in [0°, 180°], so it is unchanged by rotation, translation, uniform scale and
mirroring of the whole image (a mirror only swaps which hip is drawn where).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Point = tuple[float, float]
Side = Literal["left", "right"]
HipClass = Literal["big", "small"]

#: Big/Small threshold of the published classifier (degrees): NA ≥ threshold is "big" (normal).
DEFAULT_THRESHOLD_DEG = 105.0


def norberg_angle(head: Point, other_head: Point, rim: Point) -> float:
    """Angle (degrees) at ``head`` between the rays to ``other_head`` and to ``rim``.

    ``atan2(|cross|, dot)`` rather than ``acos(dot/|a||b|)``: it stays accurate near 0° and 180°.
    Raises ``ValueError`` when a ray has zero length (the angle is undefined).
    """
    ax, ay = other_head[0] - head[0], other_head[1] - head[1]
    bx, by = rim[0] - head[0], rim[1] - head[1]
    if math.hypot(ax, ay) == 0.0 or math.hypot(bx, by) == 0.0:
        raise ValueError("Norberg angle undefined: a head centre coincides with the other head or its rim")
    return math.degrees(math.atan2(abs(ax * by - ay * bx), ax * bx + ay * by))


@dataclass(frozen=True)
class HipKeypoints:
    """The four labelled points (pixels) and the two femoral head radii (pixels) of one image."""

    left_head: Point
    right_head: Point
    left_rim: Point
    right_rim: Point
    left_radius: float
    right_radius: float

    @property
    def na_left(self) -> float:
        return norberg_angle(self.left_head, self.right_head, self.left_rim)

    @property
    def na_right(self) -> float:
        return norberg_angle(self.right_head, self.left_head, self.right_rim)

    def transformed(self, matrix: np.ndarray) -> HipKeypoints:
        """Apply a 2×3 affine ``[A | t]`` to the points; radii scale by ``sqrt(|det A|)``.

        Exact for similarity transforms (rotation, uniform scale, translation, mirror), which is
        what orientation changes and resizing are; for anisotropic resizes the radius is the
        geometric mean, and the angles change as the image does.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (2, 3):
            raise ValueError(f"affine matrix must be 2x3, got {m.shape}")

        def tp(p: Point) -> Point:
            x, y = m[:, :2] @ np.array(p, dtype=np.float64) + m[:, 2]
            return (float(x), float(y))

        s = math.sqrt(abs(float(np.linalg.det(m[:, :2]))))
        return HipKeypoints(
            tp(self.left_head),
            tp(self.right_head),
            tp(self.left_rim),
            tp(self.right_rim),
            self.left_radius * s,
            self.right_radius * s,
        )

    def mirrored(self, width: int) -> HipKeypoints:
        """The same hips in an image of ``width`` pixels flipped left-right (pixel centres sit at integer
        coordinates, so ``x -> width - 1 - x``): each hip keeps its side label, it is only drawn on the
        other half of the image."""
        return self.transformed(np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]]))


# --- the published label layout -------------------------------------------------------------------
# The published data set (published-methods.md §B) stores per image ``Four_points`` (5×2) and
# ``Angles`` (1×2). hipgen's convention for the rows, documented here once:
#   row 0: right femoral head centre (x, y)
#   row 1: left femoral head centre (x, y)
#   row 2: right craniolateral acetabular rim (x, y)
#   row 3: left craniolateral acetabular rim (x, y)
#   row 4: (right head radius, left head radius)
# and ``Angles = [right, left]`` in degrees.
PUBLISHED_ROWS = ("right_head", "left_head", "right_rim", "left_rim", "radii")


def to_published(kp: HipKeypoints) -> tuple[np.ndarray, np.ndarray]:
    """``(Four_points 5×2, Angles 1×2)`` in the published layout."""
    four = np.array(
        [kp.right_head, kp.left_head, kp.right_rim, kp.left_rim, (kp.right_radius, kp.left_radius)],
        dtype=np.float64,
    )
    return four, np.array([[kp.na_right, kp.na_left]], dtype=np.float64)


def from_published(four_points: np.ndarray | Sequence[Sequence[float]]) -> HipKeypoints:
    """Keypoints from a published ``Four_points`` array (5×2 or 2×5, as MATLAB may transpose it)."""
    a = np.asarray(four_points, dtype=np.float64)
    if a.shape == (2, 5):
        a = a.T
    if a.shape != (5, 2):
        raise ValueError(f"Four_points must be 5x2 (four points and a radii row), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("Four_points holds non-finite values")
    return HipKeypoints(
        right_head=(float(a[0, 0]), float(a[0, 1])),
        left_head=(float(a[1, 0]), float(a[1, 1])),
        right_rim=(float(a[2, 0]), float(a[2, 1])),
        left_rim=(float(a[3, 0]), float(a[3, 1])),
        right_radius=float(a[4, 0]),
        left_radius=float(a[4, 1]),
    )


# --- Big/Small -------------------------------------------------------------------------------------
def hip_class(na_deg: float, threshold: float = DEFAULT_THRESHOLD_DEG) -> HipClass:
    """``"big"`` (normal) when NA ≥ threshold, else ``"small"``."""
    if not math.isfinite(na_deg):
        raise ValueError(f"Norberg angle must be finite, got {na_deg}")
    return "big" if na_deg >= threshold else "small"


def worst_side(na_left: float, na_right: float) -> Side:
    """The side with the smaller NA (the one that decides an image-level class); left on a tie."""
    return "left" if na_left <= na_right else "right"


def image_class(na_left: float, na_right: float, threshold: float = DEFAULT_THRESHOLD_DEG) -> HipClass:
    """Image-level Big/Small: the class of the worst side."""
    return hip_class(min(na_left, na_right), threshold)


# --- grading tables (data, not code) --------------------------------------------------------------
@dataclass(frozen=True)
class GradeBand:
    """One row of a grading table: NA in ``[na_min, na_max)`` (degrees) gives ``grade``."""

    grade: str
    na_min: float
    na_max: float
    meaning: str


@dataclass(frozen=True)
class GradingScheme:
    name: str
    source: str
    bands: tuple[GradeBand, ...]

    def grade(self, na_deg: float) -> str:
        if not math.isfinite(na_deg):
            raise ValueError(f"Norberg angle must be finite, got {na_deg}")
        for band in self.bands:
            if band.na_min <= na_deg < band.na_max:
                return band.grade
        raise ValueError(f"{self.name}: no band holds NA {na_deg}")  # bands cover the real line


_INF = math.inf

GRADING_SCHEMES: dict[str, GradingScheme] = {
    # FCI grades by NA alone. The FCI scheme also weighs joint congruency (A: NA ≥ 105° and congruent;
    # B: about 105° or slightly incongruent; C: about 100°; D: > 90°; E: < 90°), which keypoints do not
    # carry. Boundaries between the nominal values are taken at their midpoints (102.5°, and 95°
    # between C's 100° and D's lower bound of 90°) — a documented choice, not part of the source.
    "fci": GradingScheme(
        name="fci",
        source="FCI hip dysplasia scheme as summarised in published-methods.md §F (NA-only reading)",
        bands=(
            GradeBand("E", -_INF, 90.0, "severe: NA < 90°"),
            GradeBand("D", 90.0, 95.0, "moderate: NA > 90°"),
            GradeBand("C", 95.0, 102.5, "mild: NA about 100°"),
            GradeBand("B", 102.5, 105.0, "near normal: NA about 105°"),
            GradeBand("A", 105.0, _INF, "no signs: NA ≥ 105°"),
        ),
    ),
    # BVA/KC-style NA score per hip in 5° blocks below 105° (0 best, 6 worst). The official BVA/KC
    # sheet scores NA together with eight other features; this is its NA criterion in 5° blocks.
    "bva": GradingScheme(
        name="bva",
        source="BVA/KC hip scheme, Norberg-angle criterion, 5° blocks (hipgen issue 3)",
        bands=(
            GradeBand("6", -_INF, 80.0, "NA < 80°"),
            GradeBand("5", 80.0, 85.0, "80° ≤ NA < 85°"),
            GradeBand("4", 85.0, 90.0, "85° ≤ NA < 90°"),
            GradeBand("3", 90.0, 95.0, "90° ≤ NA < 95°"),
            GradeBand("2", 95.0, 100.0, "95° ≤ NA < 100°"),
            GradeBand("1", 100.0, 105.0, "100° ≤ NA < 105°"),
            GradeBand("0", 105.0, _INF, "NA ≥ 105°"),
        ),
    ),
}

DEFAULT_SCHEME = "fci"


def grade(na_deg: float, scheme: str = DEFAULT_SCHEME) -> str:
    """Grade of one hip under a named scheme (``fci`` or ``bva``)."""
    try:
        table = GRADING_SCHEMES[scheme]
    except KeyError:
        raise ValueError(
            f"unknown grading scheme {scheme!r}; choose one of {sorted(GRADING_SCHEMES)}"
        ) from None
    return table.grade(na_deg)
