"""Keypoint label files: JSON (a list of records, or one), CSV (:data:`LABEL_COLUMNS`), and the published
per-image MATLAB ``.mat`` (``Four_points`` 5×2, ``Angles`` 1×2; layout in :mod:`hipgen.anatomy`).

Text formats carry the whole :class:`LabelRecord` at full float precision; ``.mat`` carries only the
geometry, so a record read from it has its angles re-measured from the points.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from hipgen import anatomy
from hipgen.data.images import IMAGE_SUFFIXES, Radiograph, read_image, write_atomic
from hipgen.data.manifest import OnError, ReadReport, safe_relpath
from hipgen.data.record import LABEL_COLUMNS, LabelRecord
from hipgen.errors import CorruptFileError, InputError, LabelError

#: Columns a label table must have (the rest can be derived from these).
REQUIRED_COLUMNS = tuple(c for c in LABEL_COLUMNS[:14] if c != "text")
#: Stored angles that differ from the re-measured ones by more than this (degrees) are reported.
ANGLE_TOLERANCE_DEG = 0.5


# --- JSON -------------------------------------------------------------------------------------------
def encode_json(records: Iterable[LabelRecord]) -> bytes:
    return (json.dumps([r.to_dict() for r in records], indent=1, ensure_ascii=False) + "\n").encode()


def write_labels_json(path: Path | str, records: Iterable[LabelRecord]) -> None:
    write_atomic(Path(path), encode_json(records))


def read_labels_json(
    path: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> list[LabelRecord]:
    """Records from a JSON list of objects, or from one object. A file that does not parse fails as a
    whole, a bad record only itself (``<file>[<index>]`` names it)."""
    report = report if report is not None else ReadReport()
    try:
        try:
            data = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise CorruptFileError(path, f"not valid JSON ({e})") from None
        items = [data] if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise LabelError(path, "JSON labels must be an object or a list of objects")
    except InputError as e:
        report.handle(e, on_error)
        return []
    out = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise LabelError(f"{path}[{i}]", "label is not a JSON object")
            out.append(LabelRecord.from_mapping(item, f"{path}[{i}]"))
        except InputError as e:
            report.handle(e, on_error)
    return out


def _read_text(path: Path | str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"not UTF-8 text ({e})") from None


# --- CSV --------------------------------------------------------------------------------------------
def encode_csv(records: Iterable[LabelRecord]) -> bytes:
    """CSV in :data:`LABEL_COLUMNS` order (``file_name`` first, as HF ``imagefolder`` wants)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=LABEL_COLUMNS)  # \r\n ends rows: then a \r in a cell is quoted
    w.writeheader()
    for r in records:
        w.writerow(r.to_row())
    return buf.getvalue().encode("utf-8")


def write_labels_csv(path: Path | str, records: Iterable[LabelRecord]) -> None:
    write_atomic(Path(path), encode_csv(records))


def read_labels_csv(
    path: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> list[LabelRecord]:
    """Records from a label table. A missing required column or unparsable file fails as a whole, a bad
    row only itself (``<file>:<line>`` names it)."""
    report = report if report is not None else ReadReport()
    try:
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LabelError(path, f"label table is missing columns: {', '.join(missing)}")
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        report.handle(CorruptFileError(path, f"CSV does not parse ({e})"), on_error)
        return []
    except InputError as e:
        report.handle(e, on_error)
        return []
    out = []
    for line, row in rows:
        try:
            if None in row:
                raise LabelError(f"{path}:{line}", "row has more cells than the header")
            out.append(LabelRecord.from_mapping(row, f"{path}:{line}"))
        except InputError as e:
            report.handle(e, on_error)
    return out


# --- the published .mat -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MatLabels:
    keypoints: anatomy.HipKeypoints
    stored_angles: tuple[float, float] | None  # (right, left) as stored, degrees


def encode_mat(record: LabelRecord) -> bytes:
    four, angles = anatomy.to_published(record.keypoints())
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"Four_points": four, "Angles": angles})
    return buf.getvalue()


def write_mat(path: Path | str, record: LabelRecord) -> None:
    write_atomic(Path(path), encode_mat(record))


def read_mat(path: Path | str) -> MatLabels:
    try:
        m = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError/... on a bad file
        raise CorruptFileError(path, f"not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "Four_points" not in m:
        keys = sorted(k for k in m if not k.startswith("__"))
        raise LabelError(path, f"no Four_points variable (has: {', '.join(keys) or 'nothing'})")
    try:
        kp = anatomy.from_published(m["Four_points"])
    except (ValueError, TypeError) as e:
        raise LabelError(path, str(e)) from None
    stored = None
    if "Angles" in m:
        a = np.asarray(m["Angles"], dtype=np.float64).ravel()
        if a.size != 2:
            raise LabelError(path, f"Angles must hold two values [right, left], got {a.size}")
        stored = (float(a[0]), float(a[1]))
    return MatLabels(kp, stored)


def mat_record(path: Path | str, file_name: str, report: ReadReport | None = None) -> LabelRecord:
    """The record of one image from its ``.mat``: angles re-measured from the points; stored angles
    that disagree by more than :data:`ANGLE_TOLERANCE_DEG` go to ``report.warnings``."""
    m = read_mat(path)
    try:
        rec = LabelRecord.from_keypoints(file_name, m.keypoints)
    except ValueError as e:  # coincident points: the angle is undefined
        raise LabelError(path, str(e)) from None
    if m.stored_angles is not None and report is not None:
        for side, stored, measured in zip(
            ("right", "left"), m.stored_angles, (rec.na_right, rec.na_left), strict=True
        ):
            if not math.isfinite(stored) or abs(stored - measured) > ANGLE_TOLERANCE_DEG:
                report.warnings.append(
                    f"{path}: stored {side} angle {stored:.3f}° disagrees with the points "
                    f"({measured:.3f}°); using the points"
                )
    return rec


def iter_mat_folder(
    root: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> Iterator[tuple[LabelRecord, Radiograph]]:
    """Image + ``.mat`` pairs with the same stem (the published layout), anywhere under ``root``.
    A ``.mat`` without its image is an error; an image without a ``.mat`` is a warning."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    images = {p.with_suffix(""): p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    mats = sorted(root.rglob("*.mat"))
    for p in sorted(set(images) - {m.with_suffix("") for m in mats}):
        report.warnings.append(f"{images[p]}: image has no .mat labels; not read")
    for mat in mats:
        try:
            img = images.get(mat.with_suffix(""))
            if img is None:
                raise LabelError(mat, "labels reference a missing image (no image file with this stem)")
            rec = mat_record(mat, safe_relpath(img.relative_to(root).as_posix(), str(mat)), report)
            rad = read_image(img)
        except InputError as e:
            report.handle(e, on_error)
            continue
        report.read += 1
        yield rec, rad
