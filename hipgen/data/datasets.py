"""The format registry: one writer and one reader per dataset format, a manifest for every dataset
written, and readers that fail with a typed error naming the file or skip it and say so.

``open_writer(fmt, dir)`` → a context manager with ``add(record, pixels, pixels16=None, split=None)``;
on a clean exit it writes ``manifest.json``, on an exception it leaves no manifest (no manifest = an
incomplete dataset). ``iter_dataset(dir)`` → an iterator of ``(LabelRecord, Radiograph)`` whose
``.report`` lists what was skipped and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from hipgen import __version__
from hipgen.data.classfolders import CLASS_FOLDERS, ClassFolderWriter, iter_classfolders
from hipgen.data.imagefolder import (
    METADATA_NAME,
    ImageFolderWriter,
    check_pixels,
    exact_pixels,
    iter_imagefolder,
    stored_name,
)
from hipgen.data.images import DICOM_SUFFIXES, Radiograph
from hipgen.data.keypoints import iter_mat_folder
from hipgen.data.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    OnError,
    ReadReport,
    entry_for,
    read_manifest,
    safe_relpath,
    sidecar_paths,
    store,
    write_manifest,
)
from hipgen.data.preprocess import Preprocessing
from hipgen.data.record import LabelRecord
from hipgen.data.wds import WebDatasetWriter, iter_webdataset
from hipgen.errors import InputError, LabelError

FORMATS = ("imagefolder", "classfolders", "webdataset", "dicom")
#: Formats hipgen reads but does not write: the published per-image ``.mat`` labels.
READ_ONLY_FORMATS = ("mat",)

Reader = Callable[..., Iterator[tuple[LabelRecord, Radiograph]]]


class FormatWriter(Protocol):
    format: str
    entries: list[FileEntry]

    def add(
        self,
        record: LabelRecord,
        pixels: np.ndarray,
        pixels16: np.ndarray | None = None,
        *,
        split: str | None = None,
    ) -> LabelRecord: ...

    def close(self) -> None: ...


# --- DICOM folder ---------------------------------------------------------------------------------
class DicomFolderWriter:
    """One synthetic DICOM file per image (hipgen.data.dicom marks it synthetic in every place a viewer
    looks and stores the label record in a private block)."""

    format = "dicom"

    def __init__(
        self,
        root: Path | str,
        *,
        bits: int = 16,
        generator: str = "hipgen",
        model_version: str = __version__,
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> None:
        self.root, self.bits = Path(root), bits
        self.generator, self.model_version, self.pixel_spacing_mm = generator, model_version, pixel_spacing_mm
        self.entries: list[FileEntry] = []

    def add(
        self,
        record: LabelRecord,
        pixels: np.ndarray,
        pixels16: np.ndarray | None = None,
        *,
        split: str | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        burned_in: bool | None = None,
    ) -> LabelRecord:
        from hipgen.data.dicom import write_synthetic_dicom

        if record.synthetic is False:
            raise ValueError(
                f"{record.file_name}: the DICOM writer writes synthetic images only; "
                "this record says the image is real"
            )
        check_pixels(pixels, pixels16)
        rel = stored_name(record.file_name, ".dcm")
        if any(e.path == rel for e in self.entries):
            raise ValueError(f"duplicate file name {rel!r} in one dataset")
        rec = replace(record, file_name=rel)
        write_synthetic_dicom(
            self.root / rel,
            exact_pixels(pixels, pixels16),
            record=rec,
            generator=rec.generator or self.generator,
            model_version=rec.model_version or self.model_version,
            seed=rec.seed,
            pixel_spacing_mm=pixel_spacing_mm or self.pixel_spacing_mm,
            bits=self.bits,
            burned_in=burned_in,
        )
        self.entries.append(entry_for(self.root, rel, split=split, record=rec))
        return rec

    def close(self) -> None:
        pass


def iter_dicom_folder(
    root: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> Iterator[tuple[LabelRecord, Radiograph]]:
    """Every ``*.dcm`` under ``root`` with the label record it carries; a file without one is an error
    (labels unknown). ``file_name`` is the file's path relative to ``root``."""
    from hipgen.data.dicom import read_dicom, read_synthetic_labels

    root = Path(root)
    report = report if report is not None else ReadReport()
    sidecars = sidecar_paths(root)
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name == MANIFEST_NAME or p.relative_to(root).as_posix() in sidecars:
            continue
        if p.suffix.lower() not in DICOM_SUFFIXES:
            report.warnings.append(f"{p}: not a DICOM file name (.dcm); not read")
            continue
        try:
            rad = read_dicom(p)
            rec = read_synthetic_labels(p)
            if rec is None:
                raise LabelError(p, "DICOM file carries no hipgen label record")
        except InputError as e:
            report.handle(e, on_error)
            continue
        report.read += 1
        yield replace(rec, file_name=p.relative_to(root).as_posix()), rad


# --- the registry ---------------------------------------------------------------------------------
WRITERS: dict[str, Callable[..., FormatWriter]] = {
    "imagefolder": ImageFolderWriter,
    "classfolders": ClassFolderWriter,
    "webdataset": WebDatasetWriter,
    "dicom": DicomFolderWriter,
}
READERS: dict[str, Reader] = {
    "imagefolder": iter_imagefolder,
    "classfolders": iter_classfolders,
    "webdataset": iter_webdataset,
    "dicom": iter_dicom_folder,
    "mat": iter_mat_folder,
}


def check_format(fmt: str, valid: tuple[str, ...] | None = None) -> None:
    """ValueError naming the valid formats unless ``fmt`` is one of ``valid`` (default: the writable ones)."""
    valid = FORMATS if valid is None else valid
    if fmt not in valid:
        raise ValueError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(valid)}")


class DatasetWriter:
    """A format writer plus the manifest. ``preprocessing``: a :class:`Preprocessing` is applied to every
    sample (pixels and keypoints) and recorded; a mapping is only recorded (the caller applied it)."""

    def __init__(
        self,
        inner: FormatWriter,
        root: Path,
        *,
        provenance: Mapping[str, Any] | None = None,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    ) -> None:
        self.inner, self.root = inner, root
        self.provenance = dict(provenance or {})
        self._pre = preprocessing if isinstance(preprocessing, Preprocessing) else None
        self.preprocessing = (
            preprocessing.describe()
            if isinstance(preprocessing, Preprocessing)
            else dict(preprocessing)
            if preprocessing is not None
            else None
        )
        self.manifest: Manifest | None = None
        self._closed = False

    def add(
        self,
        record: LabelRecord,
        pixels: np.ndarray,
        pixels16: np.ndarray | None = None,
        *,
        split: str | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        burned_in: bool | None = None,
    ) -> LabelRecord:
        """Store one sample; returns the record as stored (``file_name`` = its path in the dataset).
        ``pixel_spacing_mm`` (row, column) and ``burned_in`` (text drawn into the pixels) are kept where
        the format has a place for them (DICOM)."""
        if self._closed:
            raise ValueError("writer is closed")
        if self._pre is not None:
            pixels, rec = self._pre(pixels, record)
            record, pixels16 = rec if rec is not None else record, None
            pixel_spacing_mm = None  # a resize changes it; unknown is better than wrong
        if isinstance(self.inner, DicomFolderWriter):
            return self.inner.add(
                record, pixels, pixels16, split=split, pixel_spacing_mm=pixel_spacing_mm, burned_in=burned_in
            )
        return self.inner.add(record, pixels, pixels16, split=split)

    def add_sidecar(self, rel: str, data: bytes) -> FileEntry:
        """Store an extra file that belongs to the data set (e.g. the phantom spec of every image),
        atomically and listed in the manifest, so ``verify_manifest`` checks it like the images."""
        if self._closed:
            raise ValueError("writer is closed")
        entry = store(self.root, safe_relpath(rel), data)
        self.inner.entries.append(entry)
        return entry

    def close(self) -> Manifest:
        if self.manifest is None:
            if self._closed:
                raise ValueError("writer was aborted; it has no manifest")
            self.inner.close()
            self.manifest = Manifest(
                self.inner.format, list(self.inner.entries), self.provenance, self.preprocessing
            )
            write_manifest(self.root, self.manifest)
        self._closed = True
        return self.manifest

    def abort(self) -> None:
        """Stop without a manifest; temp files are removed, finished files stay (each written atomically)."""
        abort = getattr(self.inner, "abort", None)
        if abort is not None:
            abort()
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_writer(
    fmt: str,
    out_dir: Path | str,
    *,
    provenance: Mapping[str, Any] | None = None,
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    **opts: Any,
) -> DatasetWriter:
    """A writer for ``fmt`` into ``out_dir`` (created; must be empty, so datasets never mix). ``opts`` go
    to the format's writer: ``bits`` (all), ``threshold`` (classfolders), ``prefix``/``maxcount``
    (webdataset), ``generator``/``model_version``/``pixel_spacing_mm`` (dicom)."""
    check_format(fmt, FORMATS)
    root = Path(out_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: output folder exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    return DatasetWriter(WRITERS[fmt](root, **opts), root, provenance=provenance, preprocessing=preprocessing)


def detect_format(path: Path | str) -> str:
    """The manifest's word if there is one, else the layout's."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    if (root / MANIFEST_NAME).is_file():
        return read_manifest(root).format
    if any(root.glob("*.tar")):
        return "webdataset"
    if (root / METADATA_NAME).is_file():
        return "classfolders" if any((root / d).is_dir() for d in CLASS_FOLDERS.values()) else "imagefolder"
    files = [p for p in root.rglob("*") if p.is_file()]
    if any(p.suffix.lower() in DICOM_SUFFIXES for p in files):
        return "dicom"
    if any(p.suffix.lower() == ".mat" for p in files):
        return "mat"
    raise InputError(
        root, f"cannot tell the dataset format (no {MANIFEST_NAME}, {METADATA_NAME}, *.tar, *.dcm or *.mat)"
    )


class DatasetReader(Iterator[tuple[LabelRecord, Radiograph]]):
    """Iterates ``(record, radiograph)``; ``report`` fills in as it goes (complete once exhausted)."""

    def __init__(self, path: Path | str, fmt: str, on_error: OnError) -> None:
        check_format(fmt, FORMATS + READ_ONLY_FORMATS)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path, self.format, self.report = Path(path), fmt, ReadReport()
        self._it = READERS[fmt](self.path, on_error=on_error, report=self.report)

    def __next__(self) -> tuple[LabelRecord, Radiograph]:
        return next(self._it)


def iter_dataset(path: Path | str, *, on_error: OnError = "raise", fmt: str | None = None) -> DatasetReader:
    """Read a dataset of any format (detected unless ``fmt`` is given)."""
    return DatasetReader(path, fmt or detect_format(path), on_error)
