"""Auto-labelling: every generated image is *measured* by the angle model (never labelled with the angle
that was asked for), and carries what was asked for and how it was made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hipgen.data.record import LabelRecord
from hipgen.generate.conditions import NaRequest
from hipgen.generate.generator import SamplerChoice


@dataclass(frozen=True)
class GeneratedLabel:
    """One generated image's label: the measured record (synthetic provenance set) plus the request.
    ``record`` is None when the angle model found no measurable pair of hips in the image (a failed
    sample): such an image is never given the requested angles instead."""

    record: LabelRecord | None
    requested: NaRequest
    choice: SamplerChoice
    file_name: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """A flat row: the label record's columns (``measured`` false and no angles when there is no
        record), then ``requested_*``, ``sampler``, ``steps``, ``guidance_scale`` (what ``hipgen
        generate`` writes to ``generation.jsonl``)."""
        measured = self.record.to_dict() if self.record is not None else {"file_name": self.file_name}
        return {
            **measured,
            "measured": self.record is not None,
            "seed": self.seed,
            "requested_na_left": self.requested.na_left,
            "requested_na_right": self.requested.na_right,
            **asdict(self.choice),
        }


def measure_each(measurer: Any, images: Sequence[np.ndarray]) -> list[Any]:
    """Measurements of ``images``, None where the angle model finds no measurable pair of hips: the
    batch at once, or — if it cannot be — each image on its own, so one failed sample costs only its
    own label."""
    try:
        return list(measurer.measure(list(images)))
    except ValueError:  # coinciding or non-finite points somewhere in the batch
        pass
    found: list[Any] = []
    for im in images:
        try:
            found.append(measurer.measure([im])[0])
        except ValueError:
            found.append(None)
    return found


def measured_angles(found: Sequence[Any]) -> np.ndarray:
    """(N, 2) [left, right] degrees, NaN where nothing was measured (what the fidelity metrics take)."""
    return np.array(
        [[m.na_left, m.na_right] if m is not None else [np.nan, np.nan] for m in found], np.float64
    )


def auto_label(
    measurer: Any,
    images: Sequence[np.ndarray],
    requested: Sequence[NaRequest],
    seeds: Sequence[int],
    choice: SamplerChoice,
    *,
    generator: str,
    model_version: str,
    file_names: Sequence[str],
) -> list[GeneratedLabel]:
    """Measure ``images`` (float [0, 1] (S, S)) with an :class:`~hipgen.angle.measure.AngleMeasurer`."""
    out = []
    for m, req, seed, name in zip(measure_each(measurer, images), requested, seeds, file_names, strict=True):
        rec = None
        if m is not None:
            try:
                rec = LabelRecord.from_keypoints(
                    name,
                    m.keypoints,
                    synthetic=True,
                    generator=generator,
                    model_version=model_version,
                    seed=int(seed),
                )
            except ValueError:  # a non-finite angle from degenerate points
                rec = None
        out.append(GeneratedLabel(rec, req, choice, name, int(seed)))
    return out


__all__ = ["GeneratedLabel", "auto_label", "measure_each", "measured_angles"]
