"""DreamBooth layout: one folder per image-level class (``Big/``, ``Small/``; the worst side decides),
plus ``metadata.csv`` at the root (``file_name`` like ``Big/x.png``) so the labels round-trip exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hipgen import anatomy
from hipgen.data.imagefolder import ImageFolderWriter, iter_imagefolder, stored_name
from hipgen.data.images import Radiograph
from hipgen.data.manifest import OnError, ReadReport
from hipgen.data.record import LabelRecord

CLASS_FOLDERS = {"big": "Big", "small": "Small"}


def class_folder(record: LabelRecord, threshold: float = anatomy.DEFAULT_THRESHOLD_DEG) -> str:
    return CLASS_FOLDERS[anatomy.image_class(record.na_left, record.na_right, threshold)]


class ClassFolderWriter(ImageFolderWriter):
    format = "classfolders"

    def __init__(
        self, root: Path | str, *, bits: int = 8, threshold: float = anatomy.DEFAULT_THRESHOLD_DEG
    ) -> None:
        super().__init__(root, bits=bits)
        self.threshold = threshold

    def place(self, record: LabelRecord) -> str:
        name = stored_name(record.file_name, ".png")
        top = name.split("/", 1)[0]
        if top in CLASS_FOLDERS.values():  # already placed (a record read back from class folders)
            name = name.split("/", 1)[1]
        return f"{class_folder(record, self.threshold)}/{name}"


def iter_classfolders(
    root: Path | str,
    *,
    on_error: OnError = "raise",
    report: ReadReport | None = None,
    threshold: float = anatomy.DEFAULT_THRESHOLD_DEG,
) -> Iterator[tuple[LabelRecord, Radiograph]]:
    """As :func:`iter_imagefolder`; an image filed under the other class than its labels say is reported
    (the labels win)."""
    report = report if report is not None else ReadReport()
    for rec, rad in iter_imagefolder(root, on_error=on_error, report=report):
        top = rec.file_name.split("/", 1)[0]
        want = class_folder(rec, threshold)
        if top in CLASS_FOLDERS.values() and top != want:
            report.warnings.append(f"{rad.source}: filed under {top}/ but its labels say {want}")
        yield rec, rad
