"""Image folder + ``metadata.csv`` as HF ``datasets`` ``imagefolder`` and the diffusers text-to-image
scripts read it (``file_name`` first, ``text`` the caption, then the rest of the label record).

Images are PNG, 8- or 16-bit; a synthetic record puts ``hipgen:synthetic=true`` and its provenance in
PNG tEXt chunks, so the file says what it is even without its labels (DESIGN §6).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from hipgen import __version__
from hipgen.data.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, Radiograph, encode_png, read_image
from hipgen.data.keypoints import encode_csv, read_labels_csv
from hipgen.data.manifest import FileEntry, OnError, ReadReport, safe_relpath, store
from hipgen.data.record import LabelRecord
from hipgen.errors import InputError, LabelError

METADATA_NAME = "metadata.csv"


def check_pixels(pixels: np.ndarray, pixels16: np.ndarray | None = None) -> None:
    """A writer's input contract: float (H, W), finite; ``pixels16`` uint16 of the same shape."""
    a = np.asarray(pixels)
    if a.ndim != 2 or a.size == 0 or a.dtype.kind != "f" or not np.isfinite(a).all():
        raise ValueError(f"pixels must be a finite float (H, W) array, got {a.dtype} {a.shape}")
    if pixels16 is not None and (pixels16.dtype != np.uint16 or pixels16.shape != a.shape):
        raise ValueError(f"pixels16 must be uint16 {a.shape}, got {pixels16.dtype} {pixels16.shape}")


def exact_pixels(pixels: np.ndarray, pixels16: np.ndarray | None) -> np.ndarray:
    """float64 pixels that encoders round back to exactly ``pixels16`` when it is given."""
    return pixels16.astype(np.float64) / 65535.0 if pixels16 is not None else pixels


def png_text(record: LabelRecord | None) -> dict[str, str]:
    """PNG tEXt chunks: the synthetic flag and provenance (nothing for a real image)."""
    if record is None or not record.synthetic:
        return {}
    return synthetic_text(record.generator, record.model_version, record.seed)


def synthetic_text(generator: str | None, model_version: str | None, seed: int | None) -> dict[str, str]:
    """The ``hipgen:*`` text chunks that mark a PNG synthetic (DESIGN §6), with what is known."""
    out = {"hipgen:synthetic": "true", "hipgen:version": __version__}
    for k, v in (("generator", generator), ("model_version", model_version), ("seed", seed)):
        if v is not None:
            out[f"hipgen:{k}"] = str(v)
    return out


def stored_name(file_name: str, suffix: str) -> str:
    """The record's file name as a safe relative path with the suffix of the stored format."""
    rel = PurePosixPath(safe_relpath(file_name, file_name))
    known = rel.suffix.lower() in (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)
    return str(rel.with_suffix(suffix) if known else rel.with_name(rel.name + suffix))


class ImageFolderWriter:
    """Writes PNGs as they come and ``metadata.csv`` on close; every file atomically."""

    format = "imagefolder"

    def __init__(self, root: Path | str, *, bits: int = 8) -> None:
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        self.root, self.bits = Path(root), bits
        self.entries: list[FileEntry] = []
        self._records: list[LabelRecord] = []
        self._names: set[str] = set()

    def place(self, record: LabelRecord) -> str:
        """Where the image goes, relative to the root."""
        return stored_name(record.file_name, ".png")

    def add(
        self,
        record: LabelRecord,
        pixels: np.ndarray,
        pixels16: np.ndarray | None = None,
        *,
        split: str | None = None,
    ) -> LabelRecord:
        """Store one image; returns its record with ``file_name`` set to the stored path."""
        check_pixels(pixels, pixels16)
        rel = self.place(record)
        if rel in self._names:
            raise ValueError(f"duplicate file name {rel!r} in one dataset")
        rec = replace(record, file_name=rel)
        data = encode_png(exact_pixels(pixels, pixels16), bits=self.bits, text=png_text(rec))
        self.entries.append(store(self.root, rel, data, split=split, record=rec))
        self._names.add(rel)
        self._records.append(rec)
        return rec

    def close(self) -> None:
        self.entries.append(store(self.root, METADATA_NAME, encode_csv(self._records)))


def iter_imagefolder(
    root: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> Iterator[tuple[LabelRecord, Radiograph]]:
    """Rows of ``metadata.csv`` with their decoded images, in table order. Rows whose image is missing
    or bad are errors; images that no row names are reported as warnings."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    meta = root / METADATA_NAME
    if not meta.is_file():
        report.handle(LabelError(meta, "no metadata.csv: this folder holds no labels"), on_error)
        return
    records = read_labels_csv(meta, on_error=on_error, report=report)
    seen: set[str] = set()
    for rec in records:
        try:
            rel = safe_relpath(rec.file_name, f"{meta} ({rec.file_name})")
            if rel in seen:
                raise LabelError(meta, f"{rel} is labelled twice")
            seen.add(rel)
            if not (root / rel).is_file():
                raise LabelError(root / rel, f"labels in {METADATA_NAME} reference a missing file")
            rad = read_image(root / rel)
        except InputError as e:
            report.handle(e, on_error)
            continue
        report.read += 1
        yield rec, rad
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.relative_to(root).as_posix() not in seen:
            report.warnings.append(f"{p}: image not named in {METADATA_NAME}; not read")


def find_label(image: Path | str) -> LabelRecord | None:
    """The label record of one image inside an image folder or class folders: the ``metadata.csv`` in
    its folder or the one above (``Big/x.png``), matched by the path relative to that table."""
    p = Path(image).resolve()
    for root in (p.parent, p.parent.parent):
        meta = root / METADATA_NAME
        if meta.is_file():
            rel = p.relative_to(root).as_posix()
            for rec in read_labels_csv(meta):
                if rec.file_name == rel:
                    return rec
    return None
