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
    """One generated image's label: the measured record (synthetic provenance set) plus the request."""

    record: LabelRecord
    requested: NaRequest
    choice: SamplerChoice

    def to_dict(self) -> dict[str, Any]:
        """A flat row: the label record's columns, then ``requested_*``, ``sampler``, ``steps``,
        ``guidance_scale`` (what ``hipgen generate`` writes to ``generation.jsonl``)."""
        return {
            **self.record.to_dict(),
            "requested_na_left": self.requested.na_left,
            "requested_na_right": self.requested.na_right,
            **asdict(self.choice),
        }


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
    found = measurer.measure(list(images))
    out = []
    for m, req, seed, name in zip(found, requested, seeds, file_names, strict=True):
        rec = LabelRecord.from_keypoints(
            name,
            m.keypoints,
            synthetic=True,
            generator=generator,
            model_version=model_version,
            seed=int(seed),
        )
        out.append(GeneratedLabel(rec, req, choice))
    return out


__all__ = ["GeneratedLabel", "auto_label"]
