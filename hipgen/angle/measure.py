"""Two-stage Norberg-angle measurement on numpy arrays, independent of how the models run.

``AngleMeasurer`` takes two callables — the locator and the hip keypoint model — that map a batch of
model inputs ``(N, 1, S, S)`` float32 to a dict of named outputs (exactly the ONNX models' I/O). The
service and CLI pass :class:`hipgen.inference.Backend` calls; training passes the torch modules, so
evaluation during training and the deployed ONNX models go through the same code.

Model contract (what ``training/angle`` exports):

- locator — input ``image`` (N, 1, 192, 192); output ``keypoints`` (N, 2, 2): the patient's right and
  left head centres in input pixels (radiological convention: image left is the patient's right in an
  upright view).
- keypoint model — input ``image`` (N, 1, 128, 128), one hip frame each (see
  :mod:`hipgen.angle.geometry`); outputs ``keypoints`` (N, 2, 2): head centre and craniolateral rim in
  crop pixels; ``radius`` (N, 1) in crop pixels; ``prob_big`` (N, 1): the classifier's P(NA ≥ 105°).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hipgen.anatomy import HipKeypoints
from hipgen.angle.geometry import (
    CROP_SIZE,
    CROP_SPAN,
    LOCATOR_SIZE,
    affine_scale,
    apply_affine,
    compose,
    crop_scale,
    hip_crop,
    hip_frame,
    invert_affine,
    letterbox,
    shrink,
)

ModelFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]
SIDES = ("right", "left")


@dataclass(frozen=True)
class Measurement:
    """One image's measurement in original pixels."""

    keypoints: HipKeypoints
    prob_big_left: float
    prob_big_right: float
    located: HipKeypoints | None = None  # the locator's head centres (rims = heads), for diagnostics

    @property
    def na_left(self) -> float:
        return self.keypoints.na_left

    @property
    def na_right(self) -> float:
        return self.keypoints.na_right


@dataclass(frozen=True)
class MeasurerConfig:
    locator_size: int = LOCATOR_SIZE
    crop_size: int = CROP_SIZE
    crop_span: float = CROP_SPAN
    refine_passes: int = 2  # re-crop around the refined head centres: the frame then sits on the head
    test_frames: int = 1  # frames per hip in the last pass (turned/scaled a little), points averaged

    @classmethod
    def from_pipeline(cls, pipe: dict[str, Any]) -> MeasurerConfig:
        """The geometry a keypoint model's MANIFEST ``pipeline`` records (defaults for what it omits)."""
        return cls(
            locator_size=int(pipe.get("locator_size", LOCATOR_SIZE)),
            crop_size=int(pipe.get("crop_size", CROP_SIZE)),
            crop_span=float(pipe.get("crop_span", CROP_SPAN)),
            refine_passes=int(pipe.get("refine_passes", 2)),
            test_frames=int(pipe.get("test_frames", 1)),
        )


# (scale, turn in degrees) of the test-time frames: within what the model saw in training
_TEST_FRAMES = (
    (1.0, 0.0),
    (1.06, 4.0),
    (0.94, -4.0),
    (1.0, -4.0),
    (0.94, 4.0),
    (1.06, -4.0),
    (1.0, 4.0),
    (1.06, 0.0),
)


class AngleMeasurer:
    """Locate both heads on the whole view, then measure each hip in its hip frame."""

    def __init__(
        self, locator: ModelFn, keypoint_model: ModelFn, config: MeasurerConfig | None = None
    ) -> None:
        self.locator = locator
        self.keypoint_model = keypoint_model
        self.config = config or MeasurerConfig()
        if self.config.refine_passes < 1:
            raise ValueError("refine_passes must be ≥ 1")
        if not 1 <= self.config.test_frames <= len(_TEST_FRAMES):
            raise ValueError(f"test_frames must be 1…{len(_TEST_FRAMES)}")

    def locate(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Head centres ``(N, 2, 2)`` [right, left] in original pixels."""
        inputs, mats = zip(*(letterbox(im, self.config.locator_size) for im in images), strict=True)
        out = np.asarray(self.locator(np.stack(inputs)[:, None])["keypoints"], np.float64)
        return np.stack([apply_affine(invert_affine(m), p) for m, p in zip(mats, out, strict=True)])

    def _shrunk(self, images: Sequence[np.ndarray], heads: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each image area-averaged once to about the crops' scale (both hips and every pass share it),
        rather than once per crop: on a 4,000-px study that resize is most of the work."""
        c = self.config
        d = np.linalg.norm(heads[:, 0] - heads[:, 1], axis=-1)
        return [
            shrink(im, float(crop_scale(di, c.crop_size, c.crop_span)) if np.isfinite(di) and di > 0 else 1.0)
            for im, di in zip(images, d, strict=True)
        ]

    def _measure_hips(
        self, shrunk: Sequence[tuple[np.ndarray, np.ndarray]], heads: np.ndarray, n_frames: int = 1
    ) -> tuple[np.ndarray, ...]:
        """One pass of the keypoint model over both hips of every image; with ``n_frames`` > 1 each hip
        is also measured in slightly turned and scaled frames and the results (in original pixels) are
        averaged — test-time augmentation that lowers the variance of the rim point."""
        c = self.config
        jitter = _TEST_FRAMES[:n_frames]
        frames = [
            hip_frame(
                heads[i, k],
                _turned(heads[i, k], heads[i, 1 - k], turn),
                side,
                size=c.crop_size,
                span=c.crop_span * scale,
            )
            for i in range(len(shrunk))
            for k, side in enumerate(SIDES)
            for scale, turn in jitter
        ]
        per_image = 2 * len(jitter)
        crops = np.stack(
            [
                hip_crop(
                    shrunk[j // per_image][0],
                    compose(m, invert_affine(shrunk[j // per_image][1])),
                    c.crop_size,
                )
                for j, m in enumerate(frames)
            ]
        )
        out = self.keypoint_model(crops[:, None])
        kps = np.asarray(out["keypoints"], np.float64)
        radius = np.asarray(out["radius"], np.float64).reshape(-1)
        prob = np.asarray(out["prob_big"], np.float64).reshape(-1)
        pts = np.stack([apply_affine(invert_affine(m), p) for m, p in zip(frames, kps, strict=True)])
        radius = radius / np.array([affine_scale(m) for m in frames])
        n, f = len(shrunk), len(jitter)
        return (
            pts.reshape(n, 2, f, 2, 2).mean(axis=2),
            radius.reshape(n, 2, f).mean(axis=2),
            prob.reshape(n, 2, f).mean(axis=2),
        )

    def measure(self, images: Sequence[np.ndarray]) -> list[Measurement]:
        """Measure a batch of float32 (H, W) images in [0, 1] (any size, any orientation)."""
        if not len(images):
            return []
        images = [np.asarray(im, np.float32) for im in images]
        located = self.locate(images)
        heads = located
        shrunk = self._shrunk(images, located)
        for p in range(self.config.refine_passes):
            last = p == self.config.refine_passes - 1
            pts, radius, prob = self._measure_hips(shrunk, heads, self.config.test_frames if last else 1)
            heads = pts[:, :, 0]  # refined head centres [right, left]
        results = []
        for i in range(len(images)):
            (rh, rr), (lh, lr) = pts[i]
            kp = HipKeypoints(
                left_head=_pt(lh),
                right_head=_pt(rh),
                left_rim=_pt(lr),
                right_rim=_pt(rr),
                left_radius=float(radius[i, 1]),
                right_radius=float(radius[i, 0]),
            )
            loc = HipKeypoints(
                _pt(located[i, 1]), _pt(located[i, 0]), _pt(located[i, 1]), _pt(located[i, 0]), 0.0, 0.0
            )
            results.append(Measurement(kp, float(prob[i, 1]), float(prob[i, 0]), loc))
        return results


def _turned(head: np.ndarray, other: np.ndarray, deg: float) -> np.ndarray:
    """``other`` turned about ``head`` by ``deg``: the frame's axis turns, the head stays put."""
    if deg == 0.0:
        return other
    a = np.radians(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return head + r @ (np.asarray(other) - head)


def _pt(p: np.ndarray) -> tuple[float, float]:
    return (float(p[0]), float(p[1]))


DEFAULT_ANGLE_MODEL = "angle_keypoints"
MIN_SIDE = 32  # pixels: a smaller image holds no measurable hips (service and CLI refuse it)
DEFAULT_LOCATOR_MODEL = "angle_locator"
KEYPOINT_OUTPUTS = frozenset({"keypoints", "radius", "prob_big"})


class NotAnAngleModelError(ValueError):
    """The named model is not a hip keypoint model (or its locator is not a locator)."""


def _spatial_size(info: Any) -> int | None:
    shape = info.inputs[0].shape if info.inputs else ()
    return shape[-1] if len(shape) == 4 and isinstance(shape[-1], int) else None


def measurer_from_backend(backend: Any, model: str = DEFAULT_ANGLE_MODEL) -> AngleMeasurer:
    """The measurer for keypoint model ``model`` and the locator its manifest names; the geometry
    (input sizes, crop span, refine passes) comes from the manifest, so it is exactly the training's.

    Raises :class:`NotAnAngleModelError` when ``model`` lacks the keypoint model's outputs, its locator
    lacks ``keypoints``, or an input size disagrees with the manifest — before any image is measured.
    """
    info = backend.model_info(model)
    outputs = {o.name for o in info.outputs}
    if not outputs >= KEYPOINT_OUTPUTS:
        raise NotAnAngleModelError(
            f"model {model!r} is not a hip keypoint model (outputs {sorted(outputs)}, "
            f"need {sorted(KEYPOINT_OUTPUTS)})"
        )
    pipe = info.manifest.get("pipeline", {})
    locator = str(pipe.get("locator", DEFAULT_LOCATOR_MODEL))
    loc_info = backend.model_info(locator)
    if "keypoints" not in {o.name for o in loc_info.outputs}:
        raise NotAnAngleModelError(f"locator {locator!r} of model {model!r} has no 'keypoints' output")
    config = MeasurerConfig.from_pipeline(pipe)
    for name, inf, size in ((locator, loc_info, config.locator_size), (model, info, config.crop_size)):
        actual = _spatial_size(inf)
        if actual is not None and actual != size:
            raise NotAnAngleModelError(f"model {name!r} takes {actual}-px inputs, its manifest says {size}")
    return AngleMeasurer(
        lambda x: backend.infer(locator, {"image": x}), lambda x: backend.infer(model, {"image": x}), config
    )
