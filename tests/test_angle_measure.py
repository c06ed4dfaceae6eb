"""The committed default angle models through the library pipeline (ONNX Runtime): what a study's
orientation, size and the measurer's options must not change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from hipgen.angle.measure import AngleMeasurer, measurer_from_backend
from hipgen.inference.backend import OrtBackend
from hipgen.phantom.render import render_phantom
from hipgen.phantom.spec import PhantomSpec


@pytest.fixture(scope="module")
def measurer(angle_repo: Path) -> AngleMeasurer:
    return measurer_from_backend(OrtBackend(angle_repo))


@pytest.fixture(scope="module")
def study() -> tuple[np.ndarray, float, float]:
    s = render_phantom(PhantomSpec(width=640, height=800, na_left=96.0, na_right=114.0), seed=21)
    return s.pixels, s.keypoints.na_left, s.keypoints.na_right


def test_turned_studies_measure_the_same(measurer: AngleMeasurer, study) -> None:
    """Studies stored turned by 90°, 180° or 270°: same patient sides, same angles (within 2°)."""
    pixels, na_left, na_right = study
    base = measurer.measure([pixels])[0]
    assert abs(base.na_left - na_left) < 4 and abs(base.na_right - na_right) < 4
    turned = measurer.measure([np.ascontiguousarray(np.rot90(pixels, k)) for k in (1, 2, 3)])
    for m in turned:
        assert abs(m.na_left - base.na_left) < 2.0 and abs(m.na_right - base.na_right) < 2.0


def test_resolution_does_not_change_the_angles(measurer: AngleMeasurer, study) -> None:
    """The same study at 3× the pixels (real studies are 1.6k–4.3k px): angles within 2°, radii ×3."""
    pixels, _, _ = study
    big = cv2.resize(pixels, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC).clip(0, 1)
    a, b = measurer.measure([pixels, big])
    assert abs(a.na_left - b.na_left) < 2.0 and abs(a.na_right - b.na_right) < 2.0
    assert b.keypoints.left_radius / a.keypoints.left_radius == pytest.approx(3.0, rel=0.08)


def test_batch_order_and_test_frames(measurer: AngleMeasurer, study) -> None:
    pixels, _, _ = study
    mirrored_size = np.ascontiguousarray(pixels[:, :600])
    one = [measurer.measure([im])[0] for im in (pixels, mirrored_size)]
    both = measurer.measure([pixels, mirrored_size])
    for a, b in zip(one, both, strict=True):  # batching never mixes images up
        assert a.na_left == pytest.approx(b.na_left, abs=1e-3)
    tta = AngleMeasurer(measurer.locator, measurer.keypoint_model, replace(measurer.config, test_frames=4))
    m = tta.measure([pixels])[0]
    assert abs(m.na_left - one[0].na_left) < 1.5 and abs(m.na_right - one[0].na_right) < 1.5
    with pytest.raises(ValueError, match="test_frames"):
        AngleMeasurer(measurer.locator, measurer.keypoint_model, replace(measurer.config, test_frames=0))
