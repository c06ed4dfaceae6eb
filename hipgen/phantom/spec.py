"""What a phantom radiograph shows: :class:`PhantomSpec`, and named distributions to sample it from.

The spec holds everything a user may want to control; the seed given to the renderer decides only
the fine random detail (noise, trabecular texture, gas pattern, text content, marker placement).
Geometry ratios and ranges follow ../shared/reference/vd-hip-anatomy.md (head radius ≈ 0.11 × inter-head
distance, rim at ≈ 1.11 × head radius, inter-head distance ≈ 0.33 × image width, NA 80–128°).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from typing import Any, Literal

import numpy as np

Marker = Literal["L", "R", ""]

NA_LIMITS = (60.0, 140.0)  # degrees; the renderer's geometry holds over this range (issue asks 70–130)


@dataclass(frozen=True)
class PhantomSpec:
    """One ventrodorsal hip-extended radiograph. Lengths in anatomy are ratios (resolution free);
    ``width``/``height`` are the stored image's pixels (after ``orientation``)."""

    # --- the label -------------------------------------------------------------------------------
    na_left: float = 105.0  # degrees, patient's left hip
    na_right: float = 105.0  # degrees
    head_radius_ratio_left: float = 0.11  # head radius / inter-head distance
    head_radius_ratio_right: float = 0.11
    rim_ratio_left: float = 1.11  # head-centre-to-rim distance / head radius
    rim_ratio_right: float = 1.11
    # --- framing ---------------------------------------------------------------------------------
    width: int = 512  # pixels of the stored image
    height: int = 512
    inter_head_fraction: float = 0.33  # inter-head distance / upright image width (field of view)
    center_x: float = 0.5  # hip midpoint, fraction of the upright image width
    center_y: float = 0.42  # hip midpoint, fraction of the upright image height
    orientation: int = 0  # clockwise rotation of the stored image: 0, 90, 180, 270 degrees
    mirror: bool = False  # stored flipped left-right (patient's left on image left); the marker says so
    # --- positioning and anatomy -----------------------------------------------------------------
    rotation_deg: float = 0.0  # in-plane rotation of the body on the table
    pelvic_rotation_deg: float = 0.0  # axial rotation about the spine (+ = left side raised)
    pelvic_tilt_deg: float = 0.0  # tilt about the transverse axis (foreshortens the pelvis)
    femur_angle_left_deg: float = 0.0  # shaft angle from the spine axis, + = stifle lateral
    femur_angle_right_deg: float = 0.0
    femur_length_ratio: float = 2.2  # femur length / inter-head distance
    body_size_mm: float = 85.0  # inter-head distance in mm: toy ≈ 35, medium ≈ 85, giant ≈ 130
    soft_tissue: float = 1.0  # soft-tissue thickness factor (lean 0.7 … obese 1.5)
    tail_deviation_deg: float = 0.0  # lateral curve of the tail
    bowel_gas: float = 0.3  # amount of gas in colon and rectum, 0 … 1
    # --- acquisition -----------------------------------------------------------------------------
    dose: float = 800.0  # photons per pixel through average soft tissue (noise: fewer is noisier)
    electronic_noise: float = 2.0  # detector read noise, in photons
    scatter: float = 0.15  # scatter-to-primary ratio
    bone_contrast: float = 1.0  # bone attenuation factor (kVp: high kVp ≈ 0.8, low ≈ 1.2)
    gamma: float = 1.0  # display gamma
    contrast: float = 1.0  # window narrowing (> 1 more contrast)
    brightness: float = 0.0  # window shift, fraction of the window
    edge_enhance: float = 0.6  # unsharp-mask amount of the CR/DR processing
    range_compression: float = 0.7  # how much thick regions are flattened by processing, 0 … 0.9
    blur_px: float = 0.6  # detector blur sigma at 512 px width (scales with the image)
    grid_lines: float = 0.0  # anti-scatter grid line amplitude (0 = no grid)
    grid_period_px: float = 3.1  # grid line period in pixels (aliases to moiré on purpose)
    grid_vertical: bool = True
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # top, bottom, left, right
    marker: Marker = "L"  # lead side marker placed by the patient's side it names
    burned_text: int = 1  # lines of burned-in annotation text (fake clinic, date, chip number)
    positioning_device: bool = False  # V-trough shadow
    overlay: bool = False  # an earlier measurement overlay drawn into the pixels

    def __post_init__(self) -> None:
        errs = []
        for name, (lo, hi) in _BOUNDS.items():
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or not lo <= v <= hi
            ):
                errs.append(f"{name}={v!r} outside {lo}–{hi}")
        if self.orientation not in (0, 90, 180, 270):
            errs.append(f"orientation must be 0, 90, 180 or 270, got {self.orientation}")
        if self.marker not in ("L", "R", ""):
            errs.append(f"marker must be 'L', 'R' or '', got {self.marker!r}")
        if len(self.collimation) != 4 or not all(
            isinstance(c, (int, float)) and 0 <= c < 0.45 for c in self.collimation
        ):
            errs.append("collimation must be four fractions in [0, 0.45)")
        if errs:
            raise ValueError("invalid PhantomSpec: " + "; ".join(errs))

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) of the image before ``orientation`` is applied."""
        return (self.width, self.height) if self.orientation in (90, 270) else (self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["collimation"] = list(self.collimation)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhantomSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PhantomSpec fields: {sorted(unknown)}")
        d = dict(d)
        if "collimation" in d:
            d["collimation"] = tuple(float(c) for c in d["collimation"])
        return cls(**d)


# Closed bounds of every numeric field: beyond them the renderer would divide by zero, produce NaN, or
# draw hips outside the image while still emitting their labels.
_BOUNDS: dict[str, tuple[float, float]] = {
    "na_left": NA_LIMITS,
    "na_right": NA_LIMITS,
    "head_radius_ratio_left": (0.05, 0.2),
    "head_radius_ratio_right": (0.05, 0.2),
    "rim_ratio_left": (0.9, 1.5),
    "rim_ratio_right": (0.9, 1.5),
    "width": (64, 8192),
    "height": (64, 8192),
    "inter_head_fraction": (0.1, 0.9),
    "center_x": (0.2, 0.8),
    "center_y": (0.1, 0.9),
    "rotation_deg": (-30.0, 30.0),
    "pelvic_rotation_deg": (-25.0, 25.0),
    "pelvic_tilt_deg": (-25.0, 25.0),
    "femur_angle_left_deg": (-30.0, 30.0),
    "femur_angle_right_deg": (-30.0, 30.0),
    "femur_length_ratio": (1.5, 3.0),
    "body_size_mm": (20.0, 200.0),
    "soft_tissue": (0.3, 3.0),
    "tail_deviation_deg": (-60.0, 60.0),
    "bowel_gas": (0.0, 1.0),
    "dose": (10.0, 1e6),
    "electronic_noise": (0.0, 100.0),
    "scatter": (0.0, 2.0),
    "bone_contrast": (0.2, 3.0),
    "gamma": (0.2, 5.0),
    "contrast": (0.2, 5.0),
    "brightness": (-1.0, 1.0),
    "edge_enhance": (0.0, 5.0),
    "range_compression": (0.0, 0.95),
    "blur_px": (0.0, 10.0),
    "grid_lines": (0.0, 0.5),
    "grid_period_px": (1.5, 50.0),
    "burned_text": (0, 6),
}


def labels_visible(spec: PhantomSpec) -> bool:
    """Both head discs and both rim points lie inside the exposed field (not under the collimator,
    not off the image): a label must never name a joint the image hides."""
    from hipgen.phantom.render import place_keypoints  # geometry only; no pixels are drawn

    H, W = spec.upright_size
    top, bottom, left, right = spec.collimation
    _, kp = place_keypoints(spec)
    for side in ("left", "right"):
        (hx, hy), r = getattr(kp, f"{side}_head"), getattr(kp, f"{side}_radius")
        rx, ry = getattr(kp, f"{side}_rim")
        for x, y, pad in ((hx, hy, r), (rx, ry, 0.1 * r)):
            if not (
                left * W + pad <= x <= (1 - right) * W - pad and top * H + pad <= y <= (1 - bottom) * H - pad
            ):
                return False
    return True


# --- named distributions ------------------------------------------------------------------------
def _clip(x: float, lo: float, hi: float) -> float:
    return float(min(max(x, lo), hi))


def _acquisition(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, Any]:
    """Wide randomisation of everything that is not the label (domain randomisation)."""
    coll = tuple(float(c) if rng.random() < 0.5 else 0.0 for c in rng.uniform(0.0, 0.12, 4))
    h, w = size
    return dict(
        width=w,
        height=h,
        dose=float(np.exp(rng.uniform(np.log(150), np.log(5000)))),
        electronic_noise=float(rng.uniform(0.0, 6.0)),
        scatter=float(rng.uniform(0.05, 0.45)),
        bone_contrast=float(rng.uniform(0.75, 1.3)),
        gamma=float(rng.uniform(0.7, 1.4)),
        contrast=float(rng.uniform(0.85, 1.25)),
        brightness=float(rng.uniform(-0.08, 0.08)),
        edge_enhance=float(rng.uniform(0.0, 1.6)),
        range_compression=float(rng.uniform(0.45, 0.9)),
        blur_px=float(rng.uniform(0.3, 1.6)),
        grid_lines=float(rng.uniform(0.01, 0.06)) if rng.random() < 0.35 else 0.0,
        grid_period_px=float(rng.uniform(2.2, 5.0)),
        grid_vertical=bool(rng.random() < 0.5),
        collimation=coll,
        marker=str(rng.choice(["L", "R", ""], p=[0.45, 0.35, 0.2])),
        burned_text=int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.25, 0.15])),
        positioning_device=bool(rng.random() < 0.25),
        overlay=bool(rng.random() < 0.1),
    )


def _anatomy(rng: np.random.Generator, rotate_prob: float, mirror_prob: float) -> dict[str, Any]:
    size_mm = float(np.exp(rng.uniform(np.log(35), np.log(130))))  # toy to giant breeds
    r = _clip(rng.normal(0.11, 0.01), 0.08, 0.14)
    return dict(
        head_radius_ratio_left=_clip(r + rng.normal(0, 0.003), 0.075, 0.145),
        head_radius_ratio_right=_clip(r + rng.normal(0, 0.003), 0.075, 0.145),
        rim_ratio_left=_clip(rng.normal(1.11, 0.05), 0.98, 1.3),
        rim_ratio_right=_clip(rng.normal(1.11, 0.05), 0.98, 1.3),
        inter_head_fraction=_clip(rng.normal(0.33, 0.08), 0.18, 0.7),
        center_x=_clip(rng.normal(0.5, 0.04), 0.35, 0.65),
        center_jitter=float(rng.normal(0.0, 0.03)),
        orientation=int(rng.choice([0, 90, 270])) if rng.random() < rotate_prob else 0,
        mirror=bool(rng.random() < mirror_prob),
        rotation_deg=float(rng.normal(0, 3.0)),
        pelvic_rotation_deg=float(rng.normal(0, 4.0)),
        pelvic_tilt_deg=float(rng.normal(0, 5.0)),
        femur_angle_left_deg=float(rng.normal(2.0, 4.0)),
        femur_angle_right_deg=float(rng.normal(2.0, 4.0)),
        femur_length_ratio=float(rng.uniform(1.9, 2.5)),
        body_size_mm=size_mm,
        soft_tissue=float(rng.uniform(0.7, 1.5)),
        tail_deviation_deg=float(rng.normal(0, 8.0)),
        bowel_gas=float(rng.uniform(0.0, 1.0)),
    )


def _size(rng: np.random.Generator, side: int) -> tuple[int, int]:
    """Upright (height, width): square or portrait like 14×17-inch cassettes (H/W 1.0–1.4)."""
    aspect = 1.0 if rng.random() < 0.4 else float(rng.uniform(1.1, 1.4))
    return (int(round(side * aspect / 8) * 8), side) if aspect > 1 else (side, side)


def _population_na(rng: np.random.Generator) -> tuple[float, float]:
    """Both sides from the measured population (mean ≈ 103°, sd ≈ 12°): a shared dog effect plus a
    per-side difference, so left–right gaps of 5–15° are common."""
    dog = rng.normal(103.0, 10.5)
    return tuple(_clip(dog + rng.normal(0, 6.0), 72.0, 130.0) for _ in range(2))  # type: ignore[return-value]


SpecSampler = Callable[[np.random.Generator, int, tuple[float, float] | None], PhantomSpec]


def _make(
    rng: np.random.Generator,
    side: int,
    na: tuple[float, float],
    *,
    rotate_prob: float,
    mirror_prob: float,
    randomise: bool,
) -> PhantomSpec:
    anat = _anatomy(rng, rotate_prob, mirror_prob)
    jitter = anat.pop("center_jitter")
    acq = _acquisition(rng, _size(rng, side))
    h, w = acq["height"], acq["width"]
    anat["center_y"] = _clip(_whole_view_center_y(h / w, anat["inter_head_fraction"]) + jitter, 0.2, 0.7)
    spec = PhantomSpec(na_left=na[0], na_right=na[1], **anat, **acq)
    if not randomise:  # tidy: upright, centred, clean acquisition; only anatomy and label vary
        spec = replace(
            spec,
            orientation=0,
            mirror=False,
            rotation_deg=0.0,
            collimation=(0.0,) * 4,
            grid_lines=0.0,
            burned_text=0,
            positioning_device=False,
            overlay=False,
            height=side,
            width=side,
            center_y=_clip(_whole_view_center_y(1.0, spec.inter_head_fraction), 0.2, 0.7),
        )
    if spec.orientation in (90, 270):  # width/height name the stored image
        spec = replace(spec, width=spec.height, height=spec.width)
    if not labels_visible(spec):  # a collimator or framing that hides a hip: open the field, re-centre
        spec = replace(spec, collimation=(0.0,) * 4, center_x=0.5, rotation_deg=0.0)
    if not labels_visible(spec):
        spec = replace(spec, inter_head_fraction=0.33, center_y=0.45)
    return spec


# The whole-pelvis view real studies use spans from the caudal lumbar spine (v ≈ -1.4 body units above
# the hips) to the stifles (v ≈ +2.3): centre the hips so that span fits, or is cut evenly when it
# cannot (a hip-filling crop).
WHOLE_VIEW_V = (-1.4, 2.3)


def _whole_view_center_y(aspect_hw: float, inter_head_fraction: float) -> float:
    visible = aspect_hw / inter_head_fraction  # image height in body units
    top, bottom = WHOLE_VIEW_V
    span = bottom - top
    cranial = -top + 0.5 * (visible - span) if visible >= span else -top * visible / span
    return cranial / visible


def _uniform_na(rng: np.random.Generator, na_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = na_range
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def sample_spec(
    distribution: str,
    rng: np.random.Generator,
    *,
    image_size: int = 512,
    na_range: tuple[float, float] | None = None,
) -> PhantomSpec:
    """Draw one spec from a named distribution.

    - ``uniform``: NA uniform over ``na_range`` (default 75–125°) per side, independent; wide
      randomisation of everything else (rotated and mirrored studies included).
    - ``population``: NA from the measured population (mean 103°, sd 12°, 72–130°), otherwise as
      ``uniform``. ``na_range`` truncates it by rejection.
    - ``tidy``: uniform NA, upright centred images with clean acquisition (for tests and figures).

    ``image_size`` is the upright width; portrait studies are taller.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {sorted(DISTRIBUTIONS)}")
    if na_range is not None:
        lo, hi = float(na_range[0]), float(na_range[1])
        if not (NA_LIMITS[0] <= lo <= hi <= NA_LIMITS[1]):
            raise ValueError(f"na_range must satisfy {NA_LIMITS[0]} <= low <= high <= {NA_LIMITS[1]}")
        na_range = (lo, hi)
    return DISTRIBUTIONS[distribution](rng, image_size, na_range)


def _sample_uniform(
    rng: np.random.Generator, side: int, na_range: tuple[float, float] | None, *, randomise: bool = True
) -> PhantomSpec:
    return _make(
        rng,
        side,
        _uniform_na(rng, na_range or (75.0, 125.0)),
        rotate_prob=0.15 * randomise,
        mirror_prob=0.05 * randomise,
        randomise=randomise,
    )


def _sample_population(
    rng: np.random.Generator, side: int, na_range: tuple[float, float] | None
) -> PhantomSpec:
    for _ in range(1000):
        na = _population_na(rng)
        if na_range is None or all(na_range[0] <= a <= na_range[1] for a in na):
            break
    else:  # a range far in the tail: fall back to uniform inside it rather than loop forever
        na = _uniform_na(rng, na_range)  # type: ignore[arg-type]
    return _make(rng, side, na, rotate_prob=0.15, mirror_prob=0.05, randomise=True)


DISTRIBUTIONS: dict[str, SpecSampler] = {
    "uniform": _sample_uniform,
    "population": _sample_population,
    "tidy": partial(_sample_uniform, randomise=False),
}


def image_seed(set_seed: int, index: int) -> int:
    """The seed of image ``index`` of a set made with ``set_seed``: one number that reproduces both the
    image's spec (:func:`spec_for_seed`) and its pixels (``render_phantom(spec, seed)``)."""
    return int(np.random.SeedSequence([int(set_seed), int(index)]).generate_state(1, np.uint32)[0])


def spec_for_seed(
    distribution: str, seed: int, *, image_size: int = 512, na_range: tuple[float, float] | None = None
) -> PhantomSpec:
    """The spec an image seed stands for under ``distribution`` (see :func:`image_seed`)."""
    return sample_spec(distribution, np.random.default_rng(seed), image_size=image_size, na_range=na_range)
