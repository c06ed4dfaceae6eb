"""Render a :class:`PhantomSpec` into a radiograph with exact keypoint labels.

Pipeline (each step a function below): place the keypoints so that the requested Norberg angles hold
by construction → add the projected thickness of every bone, soft tissue and gas → X-ray physics
(Beer–Lambert attenuation, scatter, anti-scatter grid, Poisson–Gaussian quantum noise, detector blur)
→ CR/DR display processing (log, window, gamma, unsharp mask) → burned-in artefacts → stored
orientation. Labels are then measured from the keypoints as finally placed in the stored image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hipgen import __version__
from hipgen.anatomy import HipKeypoints
from hipgen.data.images import to_uint
from hipgen.data.record import LabelRecord
from hipgen.phantom import anatomy_layout as lay
from hipgen.phantom.raster import (
    Material,
    Vec,
    add_ellipsoid,
    add_plate,
    add_polyline_tube,
    add_tube,
    arc_points,
    chords,
    polar,
    polyline_field,
    smooth_outline,
)
from hipgen.phantom.spec import PhantomSpec

RENDERER_VERSION = "phantom-1"

# Attenuation per body unit of path (the inter-head distance of a medium dog, 85 mm), relative to
# water-like soft tissue; bone values are the excess over the soft tissue they displace.
MU_SOFT = 1.0
CORTEX = Material(cortex=3.2, inner=0.9)
BAR = Material(cortex=2.4, inner=0.8, shell=0.7)  # thick parts of the flat pelvic bones
THINNING = Material(cortex=-0.45, inner=-0.45, shell=1.0)  # takes bone away (sacral foramina)
CANCELLOUS = Material(cortex=3.0, inner=1.5, shell=0.82)  # trochanters: spongy bone, thin cortex
SHAFT = Material(cortex=3.4, inner=0.35, shell=0.62)  # long-bone diaphysis: thick cortex, marrow canal
DENSE = Material(cortex=3.4, inner=1.4, shell=0.7)  # small dense bones: patella, fabellae, trochanter tip
SPINE = Material(cortex=2.8, inner=0.8, shell=0.72)
SOFT = Material(cortex=1.0, inner=1.0, shell=1.0)  # homogeneous


@dataclass(frozen=True)
class PhantomSample:
    """One rendered radiograph: pixels, exact labels and the spec + seed that reproduce it."""

    pixels: np.ndarray  # float32 (H, W) in [0, 1], bone bright
    keypoints: HipKeypoints  # in stored-image pixels (after orientation and mirror)
    spec: PhantomSpec
    seed: int
    pixel_spacing_mm: float  # isotropic

    @property
    def pixels16(self) -> np.ndarray:
        return to_uint(self.pixels, 16)

    @property
    def pixels8(self) -> np.ndarray:
        return to_uint(self.pixels, 8)

    def record(self, file_name: str = "") -> LabelRecord:
        return LabelRecord.from_keypoints(
            file_name,
            self.keypoints,
            synthetic=True,
            generator="phantom",
            model_version=f"{RENDERER_VERSION}/hipgen-{__version__}",
            seed=self.seed,
        )


@dataclass(frozen=True)
class _Frame:
    """Body units → upright image pixels, with the pelvis distortions of the spec."""

    cx: float
    cy: float
    D: float
    ex: Vec  # patient's right → left
    ey: Vec  # cranial → caudal
    spec: PhantomSpec

    def at(self, u: float, v: float) -> Vec:
        return (
            self.cx + self.D * (u * self.ex[0] + v * self.ey[0]),
            self.cy + self.D * (u * self.ex[1] + v * self.ey[1]),
        )

    def pelvis(self, u: float, v: float, side: int) -> Vec:
        """A point of one hemipelvis (outline given for the left): axial rotation narrows the raised
        side about its acetabulum; tilt foreshortens the ilium and stretches the ischium."""
        k = 1.0 - 0.45 * side * math.sin(math.radians(self.spec.pelvic_rotation_deg))
        t = math.sin(math.radians(self.spec.pelvic_tilt_deg))
        vv = v * (1.0 - 0.5 * t) if v < 0 else v * (1.0 + 0.5 * t)
        return self.at(side * (0.5 + (u - 0.5) * k), vv)

    @property
    def shift(self) -> float:
        """Sideways shift (body units) of the midline structures under axial pelvic rotation."""
        return 0.22 * math.sin(math.radians(self.spec.pelvic_rotation_deg))

    @property
    def axis_deg(self) -> float:
        """Image angle of the body's craniocaudal axis (degrees), for orienting elongated bones."""
        return math.degrees(math.atan2(self.ey[1], self.ey[0]))

    def midline(self, u: float, v: float) -> Vec:
        """Spine, sacrum and tail: shifted sideways by axial rotation, foreshortened by tilt."""
        t = math.sin(math.radians(self.spec.pelvic_tilt_deg))
        return self.at(u + self.shift, v * (1.0 - 0.5 * t) if v < 0 else v)

    def rotate(self, vec: Vec, deg: float) -> Vec:
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        return (c * vec[0] - s * vec[1], s * vec[0] + c * vec[1])


def place_keypoints(spec: PhantomSpec) -> tuple[_Frame, HipKeypoints]:
    """Head centres ``D`` apart on the rotated transverse axis; each rim at ``rim_ratio × r`` from its
    head, at the requested NA from the line to the other head, on the cranial side."""
    H, W = spec.upright_size
    D = spec.inter_head_fraction * W
    th = math.radians(spec.rotation_deg)
    ex, ey = (math.cos(th), math.sin(th)), (-math.sin(th), math.cos(th))
    f = _Frame(spec.center_x * W, spec.center_y * H, D, ex, ey, spec)
    heads = {"left": f.at(0.5, 0.0), "right": f.at(-0.5, 0.0)}
    out: dict[str, object] = {}
    for side, other in (("left", "right"), ("right", "left")):
        h, o = heads[side], heads[other]
        r = getattr(spec, f"head_radius_ratio_{side}") * D
        dist = getattr(spec, f"rim_ratio_{side}") * r
        m = ((o[0] - h[0]) / D, (o[1] - h[1]) / D)  # unit vector to the other head
        out[f"{side}_rim"] = polar(h, dist, getattr(spec, f"na_{side}"), (m, (-ey[0], -ey[1])))
        out[f"{side}_head"] = h
        out[f"{side}_radius"] = r
    return f, HipKeypoints(**out)  # type: ignore[arg-type]


# --- bones ------------------------------------------------------------------------------------------
def _hip(f: _Frame, kp: HipKeypoints, side: int) -> tuple[Vec, float, Vec, Vec, Vec]:
    """(head centre, head radius, rim point, unit vector to the other head, cranial unit vector)."""
    s, o = ("left", "right") if side > 0 else ("right", "left")
    h, other = getattr(kp, f"{s}_head"), getattr(kp, f"{o}_head")
    d = math.dist(h, other)
    m = ((other[0] - h[0]) / d, (other[1] - h[1]) / d)
    return h, getattr(kp, f"{s}_radius"), getattr(kp, f"{s}_rim"), m, (-f.ey[0], -f.ey[1])


def _femur(bone: np.ndarray, f: _Frame, kp: HipKeypoints, side: int) -> None:
    h, r, _, _, _ = _hip(f, kp, side)
    D, spec = f.D, f.spec
    s = "left" if side > 0 else "right"
    angle = side * getattr(spec, f"femur_angle_{s}_deg")  # + = stifle lateral
    down = f.rotate(f.ey, -angle)  # shaft direction
    tilt = f.axis_deg
    lat = (side * f.ex[0], side * f.ex[1])

    def off(du: float, dv: float) -> Vec:  # offsets from the head centre, lateral = +du
        return (h[0] + D * (du * lat[0] + dv * f.ey[0]), h[1] + D * (du * lat[1] + dv * f.ey[1]))

    # head, neck, trochanter and shaft are one bone: blended by maximum so that no seam or cap
    # shows where the parts overlap
    fem = np.zeros_like(bone)
    add_ellipsoid(fem, h, r, r, 0.0, CORTEX, mode="max")  # femoral head
    gt = off(*lay.GREATER_TROCHANTER)
    add_ellipsoid(
        fem,
        gt,
        lay.GREATER_TROCHANTER_AXES[1] * D,
        lay.GREATER_TROCHANTER_AXES[0] * D,
        tilt,
        CANCELLOUS,
        mode="max",
    )
    neck_end = off(*lay.NECK_END)
    L = spec.femur_length_ratio * D
    top = off(*lay.SHAFT_START)
    stations = [(top[0] + t * L * down[0], top[1] + t * L * down[1]) for t in lay.SHAFT_STATIONS]
    # the neck waists between the head and the trochanteric region, then turns down into the shaft
    start = (h[0] + 0.5 * (neck_end[0] - h[0]), h[1] + 0.5 * (neck_end[1] - h[1]))
    add_polyline_tube(fem, [start, neck_end], [0.62 * r, 0.8 * r], CORTEX, mode="max")
    add_polyline_tube(
        fem, [neck_end, *stations], [0.8 * r, *(rr * D for rr in lay.SHAFT_RADII)], SHAFT, mode="max"
    )
    bone += fem
    # lesser trochanter: a small medial bump on the proximal shaft
    lt = (stations[1][0] - 0.085 * D * lat[0], stations[1][1] - 0.085 * D * lat[1])
    add_ellipsoid(bone, lt, 0.05 * D, 0.035 * D, tilt, DENSE)
    # distal femur: two condyles, the patella over the trochlea, fabellae caudally
    knee = stations[-1]
    across = f.rotate(f.ex, -angle)

    def near(k: float, d: float) -> Vec:  # k across and d down from the knee, body units
        return (knee[0] + D * (k * across[0] + d * down[0]), knee[1] + D * (k * across[1] + d * down[1]))

    for k in (-1, 1):
        add_ellipsoid(bone, near(0.06 * k, 0.03), 0.065 * D, 0.075 * D, tilt, CORTEX)  # condyle
        add_ellipsoid(bone, near(0.1 * k, 0.06), 0.022 * D, 0.022 * D, 0.0, DENSE)  # fabella
    add_ellipsoid(bone, near(0.0, -0.08), 0.075 * D, 0.045 * D, tilt, DENSE)  # patella
    # proximal tibia and fibula below the stifle joint space
    plateau = near(0.0, 0.17)
    add_ellipsoid(bone, plateau, 0.045 * D, 0.13 * D, tilt, CORTEX)
    add_tube(bone, plateau, near(0.0, 1.77), 0.1 * D, 0.06 * D, CORTEX)
    add_tube(bone, near(0.11 * side, 0.17), near(0.11 * side, 1.67), 0.025 * D, 0.02 * D, DENSE)


def _acetabulum(bone: np.ndarray, f: _Frame, kp: HipKeypoints, side: int) -> None:
    """The acetabulum round the head. Its wall tapers to a lip at the craniolateral rim point, the
    dorsal acetabular rim runs from that point caudally across the lateral part of the head, and a
    shallow hip (low NA) sits subluxated: the cup centre lies medial of the head, widening the medial
    joint space."""
    h, r, rim, m, cranial = _hip(f, kp, side)
    na = getattr(f.spec, f"na_{'left' if side > 0 else 'right'}")
    lateral = (-m[0], -m[1])
    sub = r * 0.22 * min(max((105.0 - na) / 30.0, 0.0), 1.0)
    c0 = (h[0] + sub * m[0], h[1] + sub * m[1])  # cup centre
    axes = (m, cranial)
    rx, ry = rim[0] - c0[0], rim[1] - c0[1]
    rim_phi = math.degrees(math.atan2(rx * cranial[0] + ry * cranial[1], rx * m[0] + ry * m[1]))
    rim_rho = math.hypot(rx, ry)
    # wall: from the caudal acetabulum (joining the ischium) round the cranial side; the outer margin
    # closes in on the rim over the last 50°, so the wall ends in a lip rather than a cut
    phis = np.linspace(-105.0, rim_phi, 28)
    taper = np.clip((phis - (rim_phi - 50.0)) / 50.0, 0.0, 1.0)
    radii = 1.5 * r + (rim_rho - 1.5 * r) * taper * taper * (3 - 2 * taper)
    outer = [polar(c0, float(rr), float(q), axes) for q, rr in zip(phis, radii, strict=True)]
    inner = arc_points(c0, 0.98 * r, rim_phi - 6.0, -105.0, axes, 24)
    add_plate(bone, smooth_outline(outer + inner, 1), thickness=0.1 * f.D, cortex=0.22 * f.D, edge_px=0.2 * r)
    # dorsal acetabular rim: from the rim point caudally over the lateral third of the head
    end = polar(c0, 1.05 * r, -100.0, axes)
    ctrl = (h[0] + 0.8 * r * lateral[0], h[1] + 0.8 * r * lateral[1])
    t = np.linspace(0.0, 1.0, 16)[:, None]
    dar = (1 - t) ** 2 * np.array(rim) + 2 * (1 - t) * t * np.array(ctrl) + t**2 * np.array(end)
    add_polyline_tube(bone, [tuple(p) for p in dar], np.linspace(0.07 * r, 0.04 * r, 16).tolist(), DENSE)
    # cranial acetabular margin: the subchondral line over the cranial head, meeting the dorsal rim at
    # the rim point — that junction is the bright corner a reader marks as the craniolateral rim
    margin = arc_points(c0, 1.03 * r, 30.0, rim_phi - 4.0, axes, 14) + [rim]
    add_polyline_tube(bone, margin, 0.06 * r, DENSE)


def _pelvis(bone: np.ndarray, f: _Frame, side: int) -> None:
    """One hemipelvis. Plates and the thick bars along their borders are blended by maximum, not
    summed: the bars are where the flat bone thickens, not rods lying on top of it."""
    D = f.D
    pel = np.zeros_like(bone)
    ilium = smooth_outline([f.pelvis(u, v, side) for u, v in lay.ILIUM])
    add_plate(pel, ilium, thickness=0.07 * D, cortex=0.3 * D, edge_px=0.04 * D)
    oc, (a, b), t = lay.OBTURATOR_CENTER, lay.OBTURATOR_AXES, math.radians(lay.OBTURATOR_TILT_DEG)
    hole = []
    for q in np.linspace(0, 2 * math.pi, 32, endpoint=False):
        # egg-shaped: wider caudally (sin q > 0 is caudal)
        du, dv = a * math.cos(q) * (1.0 + lay.OBTURATOR_EGG * math.sin(q)), b * math.sin(q)
        hole.append(
            f.pelvis(
                oc[0] + du * math.cos(t) - dv * math.sin(t), oc[1] + du * math.sin(t) + dv * math.cos(t), side
            )
        )
    plate = smooth_outline([f.pelvis(u, v, side) for u, v in lay.ISCHIOPUBIC])
    add_plate(pel, plate, thickness=0.05 * D, cortex=0.25 * D, edge_px=0.04 * D, holes=[hole])
    bars = np.zeros_like(bone)
    for p0, p1, r0, r1 in lay.PELVIC_BARS:
        add_tube(bars, f.pelvis(*p0, side), f.pelvis(*p1, side), r0 * D, r1 * D, BAR, mode="max")
    # ischial tuberosity: a dense thickening at the caudolateral corner
    add_ellipsoid(
        bars, f.pelvis(0.5, 0.77, side), 0.09 * D, 0.05 * D, 20.0 * side, DENSE, depth=0.05 * D, mode="max"
    )
    bone += np.maximum(pel, bars)


def _spine(bone: np.ndarray, f: _Frame) -> None:
    D = f.D
    sac = smooth_outline([f.midline(u, v) for u, v in lay.SACRUM])
    add_plate(bone, sac, thickness=0.09 * D, cortex=0.2 * D, edge_px=0.05 * D)
    for fu, fv in lay.SACRAL_FORAMINA:  # the foramina thin the bone; they are not punched through
        for k in (-1, 1):
            add_ellipsoid(bone, f.midline(k * fu, fv), 0.022 * D, 0.018 * D, f.axis_deg, THINNING)
    add_tube(bone, f.midline(0, -1.2), f.midline(0, -0.66), 0.025 * D, 0.02 * D, DENSE)  # median crest
    tilt = f.axis_deg
    v = lay.SACRUM_CRANIAL_V
    for i, length in enumerate(lay.LUMBAR_LENGTHS):  # L7 first, going cranially
        v_end = v - length
        mid = f.midline(0.0, (v + v_end) / 2)
        add_ellipsoid(
            bone,
            mid,
            length / 2 * D * 0.97,
            lay.LUMBAR_HALF_WIDTH * D,
            tilt,
            SPINE,
            depth=0.09 * D,
            power=4.0,
        )
        # spinous process and the paired pedicles ("eyes") over the body
        add_ellipsoid(bone, mid, length * 0.36 * D, 0.022 * D, tilt, DENSE, depth=0.05 * D)
        for k in (-1, 1):
            add_ellipsoid(
                bone,
                f.midline(k * 0.07, (v + v_end) / 2 - 0.03),
                0.07 * D,
                0.025 * D,
                tilt,
                SPINE,
                depth=0.03 * D,
            )
            # transverse processes point cranio-laterally; L7's are short
            reach = 0.2 if i == 0 else 0.3
            root = f.midline(k * 0.09, (v + v_end) / 2 + 0.02)
            tip = f.midline(k * (0.09 + reach), (v + v_end) / 2 - 0.5 * reach)
            add_tube(bone, root, tip, 0.035 * D, 0.018 * D, SPINE)
            # articular processes at the caudal corners
            add_ellipsoid(
                bone, f.midline(k * 0.07, v - 0.03), 0.04 * D, 0.03 * D, tilt, DENSE, depth=0.03 * D
            )
        v = v_end - lay.DISC_GAP
    # tail: a gently curving chain of shrinking vertebrae
    for i, (u0, v0, u1, v1, heading) in enumerate(_tail_path(f.spec)):
        length = math.hypot(u1 - u0, v1 - v0)
        c = f.midline((u0 + u1) / 2, (v0 + v1) / 2)
        w = 0.075 * (1 - i / (len(lay.TAIL_LENGTHS) + 6))
        ang = tilt - math.degrees(heading)
        add_ellipsoid(bone, c, length / 2 * D * 0.92, w * D, ang, SPINE, depth=0.06 * D, power=3.0)
        if i < 3:  # transverse processes of the first caudal vertebrae
            for k in (-1, 1):
                tp = f.midline((u0 + u1) / 2 + k * (w + 0.04), (v0 + v1) / 2 - 0.02)
                add_ellipsoid(bone, tp, 0.03 * D, 0.06 * D, ang, SPINE, depth=0.025 * D)


def _tail_path(spec: PhantomSpec) -> list[tuple[float, float, float, float, float]]:
    """Caudal vertebrae as (u0, v0, u1, v1, heading) in body units, bending by ``tail_deviation_deg``."""
    curve = math.radians(spec.tail_deviation_deg)
    u, v, heading, out = 0.0, lay.TAIL_START_V, 0.0, []
    for i, length in enumerate(lay.TAIL_LENGTHS):
        heading += curve / len(lay.TAIL_LENGTHS) * (1 + i / 4)
        u1, v1 = u + length * math.sin(heading), v + length * math.cos(heading)
        out.append((u, v, u1, v1, heading))
        u, v = u1 + 0.03 * math.sin(heading), v1 + 0.03 * math.cos(heading)
    return out


# --- soft tissue and gas --------------------------------------------------------------------------
def _body_coords(f: _Frame, shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    ys = (np.arange(0, shape[0], step, dtype=np.float32) + (step - 1) / 2)[:, None]
    xs = (np.arange(0, shape[1], step, dtype=np.float32) + (step - 1) / 2)[None, :]
    dx, dy = xs - f.cx, ys - f.cy
    return (dx * f.ex[0] + dy * f.ex[1]) / f.D, (dx * f.ey[0] + dy * f.ey[1]) / f.D


def _soft_tissue(f: _Frame, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Path length through soft tissue (body units), computed at half resolution: it is smooth."""
    step = 2
    u, v = _body_coords(f, shape, step)
    spec = f.spec
    w = np.interp(v, lay.TRUNK_V, lay.TRUNK_HALF_WIDTH).astype(np.float32)
    depth = np.interp(v, lay.TRUNK_V, lay.TRUNK_DEPTH).astype(np.float32)
    trunk = depth * np.sqrt(np.maximum(1.0 - (u / w) ** 2, 0.0))
    soft = np.where(v < lay.TRUNK_V[-1], trunk, 0.0).astype(np.float32)
    # thighs and lower legs around each femur: tapered ellipsoidal cross-sections (body units)
    for side in (-1, 1):
        s = "left" if side > 0 else "right"
        a = math.radians(getattr(spec, f"femur_angle_{s}_deg"))
        du, dv = side * math.sin(a), math.cos(a)
        L = spec.femur_length_ratio
        pts = [(side * 0.55 + du * t, -0.12 + dv * t) for t in (0.0, 0.5 * L, L + 0.2, L + 2.0)]
        dn2, rad = polyline_field(u, v, pts, (*lay.THIGH_RADII, 0.17))
        soft = np.maximum(soft, chords(dn2, lay.THIGH_DEPTH * rad, SOFT))
    # the tail's own soft tissue, hanging between the hind limbs along the caudal vertebrae
    path = [(u0 + f.shift, v0) for u0, v0, *_ in _tail_path(spec) if v0 > 0.2]
    if len(path) >= 2:
        dn2, rad = polyline_field(u, v, path, np.linspace(0.17, 0.1, len(path)).tolist())
        soft = np.maximum(soft, chords(dn2, rad, SOFT))
    # a positioning trough adds plastic beside the body
    if spec.positioning_device:
        edge = float(rng.uniform(1.1, 1.5))
        soft += 0.25 * (1.0 / (1.0 + np.exp(-(np.abs(u) - edge) / 0.02))).astype(np.float32)
    # fat/muscle layering: low-frequency thickness variation
    soft *= 1.0 + 0.06 * _noise(rng, soft.shape, max(soft.shape) / 10)
    return soft * spec.soft_tissue


def _gas(f: _Frame, gas: np.ndarray, rng: np.random.Generator) -> None:
    """Colon and rectum gas: clusters of soft-edged bubbles over the pelvic canal and caudal abdomen."""
    n = int(round(f.spec.bowel_gas * 14))
    for _ in range(n):
        u0, v0 = rng.normal(0.05, 0.28), rng.uniform(-2.0, 0.3)
        c = f.at(u0, v0)
        a, b = rng.uniform(0.03, 0.16) * f.D, rng.uniform(0.03, 0.1) * f.D
        add_ellipsoid(
            gas, c, a, b, float(rng.uniform(0, 180)), Material(1.0, 1.0, 1.0), depth=min(a, b) * 1.5
        )


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth unit-variance noise with features about ``scale`` pixels across (drawn small, upsampled)."""
    small = (max(2, int(shape[0] / scale) + 2), max(2, int(shape[1] / scale) + 2))
    n = rng.standard_normal(small, dtype=np.float32)
    return cv2.resize(n, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _trabecular(rng: np.random.Generator, shape: tuple[int, int], px: float) -> np.ndarray:
    """Band-pass noise with the grain of cancellous bone (≈ 0.5–1.5 mm)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    s1 = max(0.7, 0.6 / px)
    t = cv2.GaussianBlur(n, (0, 0), s1) - cv2.GaussianBlur(n, (0, 0), 3 * s1)
    return t / (float(t.std()) + 1e-6)


# --- acquisition and display -----------------------------------------------------------------------
def _field_mask(spec: PhantomSpec, shape: tuple[int, int]) -> np.ndarray | None:
    top, bottom, left, right = spec.collimation
    if not any(spec.collimation):
        return None
    H, W = shape
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    e = max(1.0, 0.004 * W)  # penumbra
    fy = _ramp((ys - top * H) / e) * _ramp(((1 - bottom) * H - ys) / e)
    fx = _ramp((xs - left * W) / e) * _ramp(((1 - right) * W - xs) / e)
    return (fy * fx).astype(np.float32)


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + x, 0.0, 1.0)


def _marker(
    spec: PhantomSpec, f: _Frame, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray | None:
    """A lead ``L``/``R`` letter on the cassette by the side it names (read mirrored if the stored
    image is flipped, as on a real study)."""
    if not spec.marker:
        return None
    H, W = shape
    lead = np.zeros(shape, np.uint8)  # OpenCV draws text on 8-bit images only
    side = 1 if spec.marker == "L" else -1
    x, y = f.at(side * rng.uniform(1.05, 1.5), rng.uniform(-1.2, 1.6))
    size = max(10, int(0.05 * min(H, W)))
    x = float(np.clip(x, 0.03 * W, W - 0.03 * W - size))
    y = float(np.clip(y, 0.03 * H + size, H - 0.03 * H))
    scale = size / 22.0
    thick = max(2, int(round(size / 7)))
    cv2.putText(lead, spec.marker, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    if rng.random() < 0.5:  # many markers sit in a lead-lined frame
        pad = int(size * 0.25)
        cv2.rectangle(
            lead,
            (int(x) - pad, int(y) - size - pad),
            (int(x) + size + pad, int(y) + pad),
            150,
            1,
            cv2.LINE_AA,
        )
    return lead.astype(np.float32) / 255.0


def _display(
    A: np.ndarray, spec: PhantomSpec, field: np.ndarray | None, body: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    H, W = A.shape
    primary = np.exp(-A)
    if field is not None:
        primary *= field
        body = body & (field > 0.5)  # processing looks at the exposed anatomy only
    body_s = body[::4, ::4]  # a quarter-resolution sample is plenty for exposure and window statistics
    # scatter: a broad glow proportional to the primary, computed small (it has no detail)
    k = 16
    small = cv2.resize(primary, (max(2, W // k), max(2, H // k)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(small.shape) * 0.08)
    signal = primary + spec.scatter * cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    if spec.grid_lines > 0:
        n = W if spec.grid_vertical else H
        stripes = 1.0 - spec.grid_lines * (
            0.5 + 0.5 * np.cos(2 * np.pi * np.arange(n, dtype=np.float32) / spec.grid_period_px)
        )
        signal *= stripes[None, :] if spec.grid_vertical else stripes[:, None]
    # exposure set for the body: ``dose`` photons through average soft tissue
    inside = A[::4, ::4][body_s]
    n0 = spec.dose / max(float(np.exp(-inside).mean()) if inside.size else 1.0, 1e-6)
    counts = n0 * signal
    noisy = counts + np.sqrt(counts) * rng.standard_normal(A.shape, dtype=np.float32)  # quantum (Poisson)
    noisy += spec.electronic_noise * rng.standard_normal(A.shape, dtype=np.float32)  # read noise
    sigma = spec.blur_px * W / 512.0
    if sigma > 0.3:
        noisy = cv2.GaussianBlur(noisy, (0, 0), sigma)
    L = -np.log(np.maximum(noisy, 0.5) / n0)
    if spec.range_compression > 0:  # multi-frequency CR processing flattens thickness (abdomen vs thighs)
        ks = 8
        small_wh = (max(2, W // ks), max(2, H // ks))
        low = cv2.resize(L, small_wh, interpolation=cv2.INTER_AREA)
        w = cv2.resize(body.astype(np.float32), small_wh, interpolation=cv2.INTER_AREA)
        sig = max(low.shape) * 0.04
        low = cv2.GaussianBlur(low * w, (0, 0), sig) / np.maximum(cv2.GaussianBlur(w, (0, 0), sig), 1e-3)
        ref = float(np.median(L[::4, ::4][body_s])) if inside.size else float(np.median(low))
        corr = cv2.GaussianBlur(w, (0, 0), 1.0) * (low - ref)  # only inside the body: air stays black
        L = L - spec.range_compression * cv2.resize(corr, (W, H), interpolation=cv2.INTER_LINEAR)
    # window from the anatomy, as CR/DR auto-ranging does: direct exposure (air), collimated borders
    # and lead are left out of the histogram, so air clips to black and borders to white
    sample = L[::4, ::4][body_s]
    lo, hi = np.percentile(sample, (0.5, 99.8)) if sample.size > 16 else np.percentile(L, (0.5, 99.8))
    lo = lo - 0.2 * (hi - lo)  # thin soft tissue at the skin stays dark grey rather than black
    width = max(float(hi - lo), 1e-3) / spec.contrast
    center = 0.5 * (lo + hi) + spec.brightness * width
    img = np.clip((L - (center - 0.5 * width)) / width, 0.0, 1.0) ** spec.gamma
    if spec.edge_enhance > 0:  # CR/DR unsharp masking gives real studies their crisp edges
        img = img + spec.edge_enhance * (img - cv2.GaussianBlur(img, (0, 0), max(1.0, 4.0 * W / 512.0)))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


_WORDS = ("ANIMAL", "VET", "CLINIC", "HOSPITAL", "CENTRE", "NORTH", "RIVER", "OAK", "HILL", "PARK", "VALLEY")


def _burned_text(img: np.ndarray, n: int, rng: np.random.Generator) -> None:
    """Fake annotation lines (clinic, date, chip number) as real studies carry. Random content: never
    a real identifier."""
    H, W = img.shape
    ink = np.zeros(img.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    scale = max(0.35, W / 1400.0)
    corner = rng.integers(0, 4)
    for i in range(n):
        kind = rng.integers(0, 3)
        if kind == 0:
            txt = " ".join(rng.choice(_WORDS, 2)) + " " + str(rng.choice(_WORDS[:5]))
        elif kind == 1:
            txt = f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(2000, 2027)} VD HIPS"
        else:
            txt = "CHIP " + "".join(str(d) for d in rng.integers(0, 10, 15))
        (tw, th), _ = cv2.getTextSize(txt, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = 8 if corner in (0, 2) else max(2, W - tw - 8)
        y = (th + 8 + i * (th + 6)) if corner in (0, 1) else H - 8 - i * (th + 6)
        cv2.putText(
            ink,
            txt,
            (int(x), int(y)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            int(rng.integers(215, 256)),
            max(1, int(round(scale * 1.5))),
            cv2.LINE_AA,
        )
    np.maximum(img, ink.astype(np.float32) / 255.0, out=img)


def _overlay(img: np.ndarray, kp: HipKeypoints, rng: np.random.Generator) -> None:
    """A previous reader's measurement drawn into the pixels: circles on the heads, lines to the rims,
    placed by hand (so a few pixels off)."""
    val = float(rng.uniform(0.8, 1.0))
    jit = lambda p, r: (int(p[0] + rng.normal(0, 0.15 * r)), int(p[1] + rng.normal(0, 0.15 * r)))  # noqa: E731
    r = 0.5 * (kp.left_radius + kp.right_radius)
    t = max(1, int(r / 25))
    hl, hr = jit(kp.left_head, r), jit(kp.right_head, r)
    cv2.circle(img, hl, int(kp.left_radius), val, t, cv2.LINE_AA)
    cv2.circle(img, hr, int(kp.right_radius), val, t, cv2.LINE_AA)
    cv2.line(img, hl, hr, val, t, cv2.LINE_AA)
    cv2.line(img, hl, jit(kp.left_rim, 2 * r), val, t, cv2.LINE_AA)
    cv2.line(img, hr, jit(kp.right_rim, 2 * r), val, t, cv2.LINE_AA)


def _orient(img: np.ndarray, kp: HipKeypoints, spec: PhantomSpec) -> tuple[np.ndarray, HipKeypoints]:
    """Mirror (patient's left to image left), then rotate clockwise; keypoints follow exactly."""
    H, W = img.shape
    if spec.mirror:
        img, kp = img[:, ::-1], kp.mirrored(W)
    k = spec.orientation // 90
    if k == 1:  # clockwise 90: (x, y) -> (H-1-y, x)
        m = np.array([[0.0, -1.0, H - 1.0], [1.0, 0.0, 0.0]])
    elif k == 2:
        m = np.array([[-1.0, 0.0, W - 1.0], [0.0, -1.0, H - 1.0]])
    elif k == 3:  # counter-clockwise 90: (x, y) -> (y, W-1-x)
        m = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, W - 1.0]])
    else:
        return np.ascontiguousarray(img), kp
    return np.ascontiguousarray(np.rot90(img, k=-k)), kp.transformed(m)


def _skeleton(f: _Frame, kp: HipKeypoints) -> np.ndarray:
    bone = np.zeros(f.spec.upright_size, np.float32)
    for side in (1, -1):
        _pelvis(bone, f, side)
        _acetabulum(bone, f, kp, side)
        _femur(bone, f, kp, side)
    _spine(bone, f)
    return bone


def bone_map(spec: PhantomSpec) -> tuple[np.ndarray, HipKeypoints]:
    """Projected bone path length (pixels) of the upright, unmirrored view before texture, soft tissue
    and acquisition, with the keypoints in the same frame: what tests hold the labels against."""
    f, kp = place_keypoints(spec)
    return _skeleton(f, kp), kp


def render_phantom(spec: PhantomSpec, seed: int = 0) -> PhantomSample:
    """Render one radiograph. Deterministic for ``(spec, seed)``.

    >>> s = render_phantom(PhantomSpec(na_left=95.0, na_right=112.0, width=256, height=256), seed=1)
    >>> round(s.keypoints.na_left, 6), s.pixels.shape
    (95.0, (256, 256))
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x48495047]))
    shape = spec.upright_size
    f, kp = place_keypoints(spec)
    bone = _skeleton(f, kp)
    px_mm = spec.body_size_mm / f.D
    bone *= 1.0 + 0.07 * _trabecular(rng, shape, px_mm)
    np.maximum(bone, 0.0, out=bone)

    soft_small = _soft_tissue(f, shape, rng)
    gas = np.zeros(soft_small.shape, np.float32)
    _gas(_Frame(f.cx / 2, f.cy / 2, f.D / 2, f.ex, f.ey, spec), gas, rng)
    gas *= 1.0 + 0.5 * _noise(rng, gas.shape, 6.0)
    soft_small = np.maximum(soft_small - np.clip(gas, 0, None) / (f.D / 2) * 0.8, 0.0)
    soft = cv2.resize(soft_small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)

    size = spec.body_size_mm / 85.0  # larger dogs: more tissue per body unit
    A = size * (MU_SOFT * soft + spec.bone_contrast * bone / f.D)
    lead = _marker(spec, f, shape, rng)
    if lead is not None:
        A += 9.0 * lead
    img = _display(A, spec, _field_mask(spec, shape), soft > 0.5, rng)
    if spec.overlay:
        _overlay(img, kp, rng)
    img, kp = _orient(img, kp, spec)
    if spec.burned_text:
        _burned_text(img, spec.burned_text, rng)
    return PhantomSample(pixels=img, keypoints=kp, spec=spec, seed=int(seed), pixel_spacing_mm=float(px_mm))
