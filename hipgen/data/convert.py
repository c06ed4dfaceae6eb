"""Copy a dataset into another format, optionally a subset with some labels replaced: what ``hipgen
convert`` does, and how a reviewed set is exported (corrected labels, rejected images left out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hipgen.data.datasets import check_format, detect_format, iter_dataset, open_writer
from hipgen.data.manifest import Manifest, OnError, ReadReport
from hipgen.data.preprocess import Preprocessing
from hipgen.data.record import LabelRecord
from hipgen.data.relabel import check_correction


@dataclass(frozen=True)
class ConvertResult:
    count: int  # images written
    excluded: int  # images that ``include`` left out
    source_format: str
    report: ReadReport  # what the reader skipped or warned about
    manifest: Manifest


def split_assignment(
    src: Path | str, ratio: tuple[float, float, float], *, seed: int = 0, on_error: OnError = "raise"
) -> dict[str, str]:
    """A stratified split of ``src`` by file name (a first pass: stratifying needs every label)."""
    from hipgen.data.split import split_records

    recs = [rec for rec, _ in iter_dataset(src, on_error=on_error)]
    assignment = split_records(recs, ratio=ratio, seed=seed).assignment
    return dict(zip((r.file_name for r in recs), assignment, strict=True))


def convert_dataset(
    src: Path | str,
    dst: Path | str,
    to: str,
    *,
    bits: int = 16,
    include: Callable[[LabelRecord], bool] | None = None,
    replace_records: Mapping[str, LabelRecord] | None = None,
    splits: Mapping[str, str] | None = None,
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    on_error: OnError = "raise",
    progress: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Write ``src`` (any format) to ``dst`` (created; must be empty) as ``to``; labels are carried over
    exactly and follow any preprocessing. ``replace_records`` (source ``file_name`` → record in source
    pixel coordinates; its own ``file_name`` is ignored) swaps labels; ``include`` then decides on the
    final record; ``splits`` assigns source file names to splits. ``provenance`` is added to
    ``{"converted_from": <source format>}``. A replacement for an image the source never yielded is an
    error (``on_error="raise"``; no manifest is written) or a report warning (``"skip"``).
    ``progress(n)`` is called after each image written."""
    check_format(to)
    replacements = dict(replace_records or {})
    for rec in replacements.values():
        check_correction(rec)
    src_fmt = detect_format(src)
    items = iter_dataset(src, on_error=on_error)
    prov = {"converted_from": src_fmt, **(provenance or {})}
    splits = splits or {}
    n = excluded = 0
    seen: set[str] = set()
    with open_writer(to, dst, bits=bits, provenance=prov, preprocessing=preprocessing) as writer:
        for rec, img in items:
            name = rec.file_name
            seen.add(name)
            if name in replacements:
                rec = replace(replacements[name], file_name=name)
            if include is not None and not include(rec):
                excluded += 1
                continue
            writer.add(rec, img.pixels, split=splits.get(name), pixel_spacing_mm=img.pixel_spacing_mm)
            n += 1
            if progress is not None:
                progress(n)
        unused = sorted(set(replacements) - seen)
        if unused:
            msg = f"replacement labels for images not in {src}: {', '.join(unused[:10])}"
            if on_error == "raise":
                raise ValueError(msg)
            items.report.warnings.append(msg)
    assert writer.manifest is not None
    return ConvertResult(n, excluded, src_fmt, items.report, writer.manifest)
