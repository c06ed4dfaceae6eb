"""Projected-thickness primitives: each adds, inside its own bounding box, the path length an X-ray
travels through one solid, so overlapping bones add up as they do on film.

Bones are shells: a dense cortex around cancellous bone. Seen in projection, a shell is brightest
where the beam runs tangentially through the cortex — which is what draws the bright cortical
edges of a real radiograph. Each primitive therefore adds ``cortex × (outer − inner chord) +
cancellous × inner chord``. Work is confined to the bounding box, which keeps a 512² phantom at tens
of milliseconds; OpenCV draws the polygons because its C rasteriser with sub-pixel ``shift`` is far
faster than a numpy point-in-polygon test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Vec = tuple[float, float]


@dataclass(frozen=True)
class Material:
    """Attenuation weights per unit path length: cortical shell and inner (cancellous) bone."""

    cortex: float
    inner: float
    shell: float = 0.78  # inner radius / outer radius


def _roi(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float):
    h, w = shape
    ix0, iy0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
    ix1, iy1 = min(int(math.ceil(x1)) + 1, w), min(int(math.ceil(y1)) + 1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    xs = np.arange(ix0, ix1, dtype=np.float32)[None, :]
    ys = np.arange(iy0, iy1, dtype=np.float32)[:, None]
    return (slice(iy0, iy1), slice(ix0, ix1)), xs, ys


def chords(dn2: np.ndarray, half_depth: np.ndarray | float, mat: Material) -> np.ndarray:
    """Path length through a shell at normalised squared distance ``dn2`` from the axis."""
    outer = np.sqrt(np.maximum(1.0 - dn2, 0.0))
    inner = np.sqrt(np.maximum(1.0 - dn2 / (mat.shell * mat.shell), 0.0)) * mat.shell
    return (2.0 * half_depth) * (mat.cortex * (outer - inner) + mat.inner * inner)


def _put(acc: np.ndarray, sl: tuple[slice, slice], val: np.ndarray, mode: str) -> None:
    if mode == "add":
        acc[sl] += val
    elif mode == "max":
        np.maximum(acc[sl], val, out=acc[sl])
    else:
        raise ValueError(f"mode must be 'add' or 'max', got {mode!r}")


def add_tube(
    acc: np.ndarray, p0: Vec, p1: Vec, r0: float, r1: float, mat: Material, mode: str = "add"
) -> None:
    """A tapered cylinder (capsule) from ``p0`` to ``p1`` with radii ``r0`` → ``r1`` (pixels)."""
    add_polyline_tube(acc, [p0, p1], [r0, r1], mat, mode)


def add_ellipsoid(
    acc: np.ndarray,
    c: Vec,
    a: float,
    b: float,
    angle_deg: float,
    mat: Material,
    depth: float | None = None,
    power: float = 2.0,
    mode: str = "add",
) -> None:
    """An ellipsoid (or, with ``power`` > 2, a rounded box) with semi-axes ``a`` along ``angle_deg``
    and ``b`` across it (pixels); ``depth`` is its half-thickness along the beam (default ``min(a, b)``)."""
    rr = max(a, b)
    box = _roi(acc.shape, c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr)
    if box is None or a <= 0 or b <= 0:
        return
    sl, xs, ys = box
    ca, sa = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rx, ry = xs - c[0], ys - c[1]
    u = (rx * ca + ry * sa) / a
    v = (-rx * sa + ry * ca) / b
    dn2 = u * u + v * v if power == 2.0 else (np.abs(u) ** power + np.abs(v) ** power) ** (2.0 / power)
    _put(acc, sl, chords(dn2, min(a, b) if depth is None else depth, mat), mode)


def add_plate(
    acc: np.ndarray,
    polygon: Sequence[Vec],
    thickness: float,
    cortex: float,
    edge_px: float,
    holes: Sequence[Sequence[Vec]] = (),
) -> None:
    """A flat bone seen face-on: ``thickness`` inside, rounded to zero at the outline over ``edge_px``,
    plus a cortical rim of weight ``cortex`` that also lines every hole (e.g. the obturator foramen)."""
    pts = np.asarray(polygon, dtype=np.float64)
    x0, y0 = pts.min(axis=0) - 2
    x1, y1 = pts.max(axis=0) + 2
    box = _roi(acc.shape, x0, y0, x1, y1)
    if box is None:
        return
    sl, xs, ys = box
    ox, oy = float(xs[0, 0]), float(ys[0, 0])
    # pad one pixel so that the distance transform sees the outline where the box is clipped
    h, w = ys.shape[0] + 2, xs.shape[1] + 2
    mask = np.zeros((h, w), np.uint8)
    shift = 4  # sub-pixel vertices (1/16 px)

    def fixed(poly: Sequence[Vec]) -> np.ndarray:
        p = (np.asarray(poly, dtype=np.float64) - [ox - 1, oy - 1]) * (1 << shift)
        return np.round(p).astype(np.int32).reshape(-1, 1, 2)

    cv2.fillPoly(mask, [fixed(polygon)], 255, lineType=cv2.LINE_8, shift=shift)
    for hole in holes:
        cv2.fillPoly(mask, [fixed(hole)], 0, lineType=cv2.LINE_8, shift=shift)
    d = cv2.distanceTransform(mask, cv2.DIST_L2, 5)[1:-1, 1:-1]
    e = max(edge_px, 0.5)
    acc[sl] += thickness * np.sqrt(np.minimum(d / e, 1.0)) + cortex * np.sqrt(
        np.minimum(d / 1.5, 1.0)
    ) * np.exp(-d / (0.7 * e))


def smooth_outline(polygon: Sequence[Vec], rounds: int = 2) -> list[Vec]:
    """Chaikin corner cutting: bones have no corners, and a few rounds turn a coarse outline into an
    organic one while staying inside its convex hull."""
    pts = [tuple(p) for p in polygon]
    for _ in range(rounds):
        out = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            out += [
                (0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1),
                (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1),
            ]
        pts = out
    return pts  # type: ignore[return-value]


def polar(center: Vec, radius: float, angle_deg: float, axes: tuple[Vec, Vec]) -> Vec:
    """The point at ``radius`` and ``angle_deg`` from ``center`` in the frame spanned by ``axes`` (unit
    vectors for 0° and 90°) — how every angle about a femoral head is laid out."""
    (ux, uy), (vx, vy) = axes
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return (center[0] + radius * (c * ux + s * vx), center[1] + radius * (c * uy + s * vy))


def arc_points(
    center: Vec, radius: float, a0: float, a1: float, axes: tuple[Vec, Vec], n: int = 16
) -> list[Vec]:
    """``n`` points on a circular arc from angle ``a0`` to ``a1`` (degrees), see :func:`polar`."""
    return [polar(center, radius, float(a), axes) for a in np.linspace(a0, a1, n)]


def polyline_field(xs: np.ndarray, ys: np.ndarray, pts: Sequence[Vec], radii: Sequence[float]):
    """``(dn2, R)``: squared distance to the nearest segment of a tapered polyline, normalised by the
    local radius ``R`` there. Taking the nearest segment (not a sum) joins segments without seams."""
    xy = np.asarray(pts, dtype=np.float64)
    best = np.full(np.broadcast_shapes(xs.shape, ys.shape), np.inf, np.float32)
    rad = np.ones_like(best)
    for (p0, p1), r0, r1 in zip(zip(xy[:-1], xy[1:], strict=True), radii[:-1], radii[1:], strict=True):
        dx, dy = p1 - p0
        L2 = dx * dx + dy * dy
        rx, ry = xs - p0[0], ys - p0[1]
        t = np.clip((rx * dx + ry * dy) / L2, 0.0, 1.0) if L2 > 0 else np.zeros_like(best)
        R = r0 + (r1 - r0) * t
        dn2 = ((rx - t * dx) ** 2 + (ry - t * dy) ** 2) / (R * R)
        closer = dn2 < best
        best = np.where(closer, dn2, best)
        rad = np.where(closer, R, rad)
    return best, rad


def add_polyline_tube(
    acc: np.ndarray, pts: Sequence[Vec], r: float | Sequence[float], mat: Material, mode: str = "add"
) -> None:
    """A tube along a polyline with a radius per vertex (the femoral shaft, the acetabular rim arc)."""
    radii = [float(r)] * len(pts) if isinstance(r, (int, float)) else [float(x) for x in r]
    if len(pts) < 2:
        return
    xy = np.asarray(pts, dtype=np.float64)
    rmax = max(radii)
    box = _roi(
        acc.shape, xy[:, 0].min() - rmax, xy[:, 1].min() - rmax, xy[:, 0].max() + rmax, xy[:, 1].max() + rmax
    )
    if box is None or rmax <= 0:
        return
    sl, xs, ys = box
    dn2, rad = polyline_field(xs, ys, pts, radii)
    _put(acc, sl, chords(dn2, rad, mat), mode)
