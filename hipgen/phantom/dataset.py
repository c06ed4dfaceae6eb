"""Render a labelled phantom data set into any hipgen format (``hipgen phantom``, ``make run``).

Image ``i`` of a set made with ``seed`` has its own seed ``s = image_seed(seed, i)`` (its label's
``seed``): ``render_phantom(spec_for_seed(distribution, s, ...), s)`` renders it again, with the
distribution, size and NA range the manifest records. The set also holds ``phantom_specs.jsonl``: one
line per image with its file name, seed and full :class:`PhantomSpec`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hipgen.data.datasets import open_writer
from hipgen.data.manifest import Manifest
from hipgen.data.record import LabelRecord
from hipgen.data.split import split_records
from hipgen.phantom.render import RENDERER_VERSION, place_keypoints, render_phantom
from hipgen.phantom.spec import image_seed, spec_for_seed

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
    split_ratio: tuple[float, float, float] | None = None,
    on_record: Callable[[LabelRecord], None] | None = None,
) -> Manifest:
    """Render ``count`` phantoms into ``out`` and return the manifest.

    ``split_ratio`` (train, val, test; e.g. the published 219/31/84) assigns a stratified split by
    Big/Small class, seeded by ``seed``. Specs are drawn before anything is written, so bad arguments
    raise ``ValueError`` with ``out`` untouched.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    seeds = [image_seed(seed, i) for i in range(count)]
    specs = [spec_for_seed(distribution, s, image_size=size, na_range=na_range) for s in seeds]
    ext = ".dcm" if fmt == "dicom" else ".png"
    names = [f"phantom_{seed}_{i:06d}{ext}" for i in range(count)]
    splits: list[str | None] = [None] * count
    if split_ratio is not None:  # labels are known from the geometry before any pixel is drawn
        planned = [
            LabelRecord.from_keypoints(n, place_keypoints(sp)[1]) for n, sp in zip(names, specs, strict=True)
        ]
        splits = list(split_records(planned, ratio=split_ratio, seed=seed).assignment)
    provenance = {
        "generator": "phantom",
        "model_version": RENDERER_VERSION,
        "seed": seed,
        "distribution": distribution,
        "na_range": list(na_range) if na_range else None,
        "size": size,
        "split_ratio": list(split_ratio) if split_ratio else None,
    }
    lines = []
    with open_writer(fmt, out, provenance=provenance, bits=bits) as writer:
        for s, spec, name, split in zip(seeds, specs, names, splits, strict=True):
            sample = render_phantom(spec, seed=s)
            stored = writer.add(
                sample.record(name),
                sample.pixels,
                sample.pixels16 if bits == 16 else None,
                split=split,
                pixel_spacing_mm=(sample.pixel_spacing_mm, sample.pixel_spacing_mm),
                burned_in=spec.burned_text > 0 or spec.overlay,
            )
            lines.append(json.dumps({"file_name": stored.file_name, "seed": s, "spec": spec.to_dict()}))
            if on_record is not None:
                on_record(stored)
        writer.add_sidecar(SPECS_NAME, ("\n".join(lines) + "\n").encode())
    assert writer.manifest is not None
    return writer.manifest
