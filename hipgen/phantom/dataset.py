"""Render a labelled phantom data set into any hipgen format (``hipgen phantom``, ``make run``).

Besides the images and their label records, the set holds ``phantom_specs.jsonl``: one line per image
with its file name, seed and full :class:`PhantomSpec`, so any image can be rendered again exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hipgen.data.datasets import open_writer
from hipgen.data.manifest import Manifest
from hipgen.data.record import LabelRecord
from hipgen.phantom.render import RENDERER_VERSION, render_phantom
from hipgen.phantom.spec import sample_spec

SPECS_NAME = "phantom_specs.jsonl"


def write_phantom_set(
    out: str | Path,
    count: int,
    fmt: str = "imagefolder",
    *,
    seed: int = 0,
    size: int = 512,
    distribution: str = "uniform",
    na_range: tuple[float, float] | None = None,
    bits: int = 8,
    on_record: Callable[[LabelRecord], None] | None = None,
) -> Manifest:
    """Render ``count`` phantoms (image ``i`` from seed ``seed + i``) into ``out`` and return the manifest.

    Specs are drawn first from one generator seeded with ``seed`` so that a set is reproducible as a
    whole; bad arguments raise ``ValueError`` before anything is written.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    specs = [sample_spec(distribution, rng, image_size=size, na_range=na_range) for _ in range(count)]
    ext = ".dcm" if fmt == "dicom" else ".png"
    provenance = {
        "generator": "phantom",
        "model_version": RENDERER_VERSION,
        "seed": seed,
        "distribution": distribution,
        "na_range": list(na_range) if na_range else None,
        "size": size,
    }
    lines = []
    with open_writer(fmt, out, provenance=provenance, bits=bits) as writer:
        for i, spec in enumerate(specs):
            sample = render_phantom(spec, seed=seed + i)
            spacing = (sample.pixel_spacing_mm, sample.pixel_spacing_mm)
            stored = writer.add(
                sample.record(f"phantom_{seed + i:06d}{ext}"),
                sample.pixels,
                sample.pixels16 if bits == 16 else None,
                pixel_spacing_mm=spacing,
            )
            lines.append(
                json.dumps({"file_name": stored.file_name, "seed": seed + i, "spec": spec.to_dict()})
            )
            if on_record is not None:
                on_record(stored)
        writer.add_sidecar(SPECS_NAME, ("\n".join(lines) + "\n").encode())
    assert writer.manifest is not None
    return writer.manifest
