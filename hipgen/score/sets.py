"""Image sets to score, read from a folder (``file://`` or a plain path), an ``s3://`` prefix, or images
sent inline: decoded to float [0, 1] grey, with each image's label record where the set has one and
its *requested* angles where a generator wrote them (``generation.jsonl`` from ``hipgen generate`` or a
dataset job) — angle fidelity compares those with what the angle model measures.

A folder in any hipgen dataset format is read with :func:`hipgen.data.datasets.iter_dataset`; a folder of
bare images (PNG, JPEG, TIFF, DICOM — a user's real radiographs with no labels) is read file by file.
Unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from hipgen.data.datasets import detect_format, iter_dataset
from hipgen.data.images import read_image
from hipgen.data.record import LabelRecord
from hipgen.errors import FieldError, InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
GENERATION_LOG = "generation.jsonl"


class SetError(FieldError):
    """A set that cannot be scored; ``field`` names the request field (``reference`` or ``candidate``)."""


@dataclass
class ImageSet:
    images: list[np.ndarray]  # float32 (H, W) in [0, 1]
    names: list[str]
    records: list[LabelRecord | None]
    requested: np.ndarray | None = None  # (N, 2) [left, right] degrees, NaN where unknown
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


@contextmanager
def local_folder(uri: str, field_name: str) -> Iterator[Path]:
    """``file://…`` or a path → that folder; ``s3://bucket/prefix`` → a temporary local copy (fsspec +
    s3fs, the endpoint from the usual AWS variables), removed afterwards."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri)
        if not path.is_dir():
            raise SetError(field_name, f"{uri}: no such folder")
        yield path
        return
    if parsed.scheme != "s3":
        raise SetError(field_name, f"{uri}: only file:// and s3:// URIs are read")
    try:
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)  # the endpoint/credentials of now
    except (ImportError, ValueError) as e:
        raise SetError(field_name, f"{uri}: reading s3:// needs s3fs installed ({e})") from None
    with tempfile.TemporaryDirectory(prefix="hipgen-score-") as tmp:
        try:
            fs.get(uri.rstrip("/") + "/", tmp, recursive=True)
        except (OSError, ValueError) as e:  # missing bucket or key, denied, unreachable endpoint
            raise SetError(field_name, f"{uri}: {e}") from None
        yield Path(tmp)


def _requested(root: Path) -> dict[str, tuple[float, float]]:
    log = root / GENERATION_LOG
    out: dict[str, tuple[float, float]] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["file_name"]] = (float(row["requested_na_left"]), float(row["requested_na_right"]))
    return out


def read_folder(
    root: Path, *, limit: int, field_name: str = "set", on_image: Callable[[int], None] | None = None
) -> ImageSet:
    """Read at most ``limit`` images (more is an error naming ``field_name``, not a silent cut)."""
    images: list[np.ndarray] = []
    names: list[str] = []
    records: list[LabelRecord | None] = []
    skipped: list[str] = []

    def add(name: str, pixels: np.ndarray, record: LabelRecord | None) -> None:
        if len(images) >= limit:
            raise SetError(field_name, f"{root}: more than {limit} images (the server's limit)")
        images.append(np.asarray(pixels, np.float32))
        names.append(name)
        records.append(record)
        if on_image:
            on_image(len(images))

    try:
        fmt: str | None = detect_format(root)
    except InputError:
        fmt = None
    if fmt is not None:
        reader = iter_dataset(root, on_error="skip", fmt=fmt)
        for record, rad in reader:
            add(record.file_name, rad.pixels, record)
        skipped = [str(s) for s in reader.report.skipped]
    else:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                rad = read_image(path)
            except (InputError, OSError, ValueError) as e:
                skipped.append(f"{path.name}: {e}")
                continue
            add(path.relative_to(root).as_posix(), rad.pixels, None)
    if not images:
        raise SetError(field_name, f"{root}: no readable images")
    req = _requested(root)
    requested = None
    if req:
        requested = np.array([req.get(n, (math.nan, math.nan)) for n in names], np.float64)
    return ImageSet(images, names, records, requested, str(root), skipped)


def load_set(
    uri: str, *, limit: int, field_name: str = "set", on_image: Callable[[int], None] | None = None
) -> ImageSet:
    with local_folder(uri, field_name) as root:
        s = read_folder(root, limit=limit, field_name=field_name, on_image=on_image)
    s.source = uri
    return s


__all__ = ["GENERATION_LOG", "ImageSet", "SetError", "load_set", "local_folder", "read_folder"]
