"""A dataset job's output opened for label review: its items (label, requested angles), their pixels,
and decisions written back into the dataset's own files.

Items are keyed by the file's stem (``000012``): a correction that flips the Big/Small class moves a
class-folders image to the other folder, so its path changes while its stem does not.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hipgen.data.convert import convert_dataset
from hipgen.data.generation_log import read_generation_log
from hipgen.data.images import decode_image_bytes, read_image
from hipgen.data.manifest import MANIFEST_NAME, Manifest, read_manifest
from hipgen.data.record import LabelRecord
from hipgen.data.relabel import recover_relabel, relabel_dataset
from hipgen.data.wds import sample_key

log = logging.getLogger("services.review")
CORRECTIONS_LOG = "review/corrections.jsonl"  # the audit trail, carried inside the dataset
DECISIONS = "review/decisions.json"  # the latest decision per image


def item_key(file_name: str) -> str:
    return PurePosixPath(file_name).stem


@dataclass(frozen=True)
class ReviewItem:
    key: str
    file_name: str
    record: LabelRecord
    requested: tuple[float, float] | None
    archive: str | None = None  # the webdataset shard that holds it

    @property
    def delta_deg(self) -> float | None:
        """The larger |requested − measured| of the two sides: how far the generator missed."""
        if self.requested is None:
            return None
        return max(
            abs(self.requested[0] - self.record.na_left), abs(self.requested[1] - self.record.na_right)
        )


class JobDataset:
    """One dataset folder; reads are fresh from the manifest, writes are serialised by a lock (one
    review app process per dataset; the relabel journal makes each write atomic on disk)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()  # held across a whole decision (read, write back, record)
        self._cache: tuple[float, list[ReviewItem]] | None = None
        with self.lock:
            recover_relabel(root)  # an earlier write-back cut short is finished first

    def manifest(self) -> Manifest:
        return read_manifest(self.root)

    def items(self) -> list[ReviewItem]:
        """Every labelled image, by key (cached until the manifest changes)."""
        stamp = (self.root / MANIFEST_NAME).stat().st_mtime_ns
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        # by stem: the log keeps the name an image was written under, before any class-folder move
        requested = {item_key(name): na for name, na in read_generation_log(self.root).items()}
        items = []
        for entry in self.manifest().files:
            for rec in (entry.record,) if entry.record is not None else entry.samples:
                key = item_key(rec.file_name)
                items.append(
                    ReviewItem(
                        key, rec.file_name, rec, requested.get(key), entry.path if entry.samples else None
                    )
                )
        items.sort(key=lambda it: it.key)
        self._cache = (stamp, items)
        return items

    def item(self, key: str) -> ReviewItem | None:
        return next((it for it in self.items() if it.key == key), None)

    def image_bytes(self, item: ReviewItem) -> bytes:
        """The stored image file (PNG or DICOM) as written: what the angle model measures."""
        if item.archive is None:
            return (self.root / item.file_name).read_bytes()
        with tarfile.open(self.root / item.archive) as tar:
            key = sample_key(item.file_name)
            for member in tar.getmembers():
                if member.name.startswith(key + ".") and member.name.rsplit(".", 1)[-1] == "png":
                    f = tar.extractfile(member)
                    if f is not None:
                        return f.read()
        raise FileNotFoundError(f"{item.file_name}: not in {item.archive}")

    def pixels(self, item: ReviewItem) -> np.ndarray:
        if item.archive is None:
            return read_image(self.root / item.file_name).pixels
        return decode_image_bytes(self.image_bytes(item), source=item.file_name).pixels

    def write_back(
        self, corrections: Mapping[str, LabelRecord], trail: list[dict[str, Any]], decisions: dict[str, str]
    ) -> Manifest:
        """Corrected labels (by file name), the audit trail and the decisions, into the dataset's labels
        and manifest in one atomic step."""
        sidecars = {
            CORRECTIONS_LOG: "".join(json.dumps(e, sort_keys=True) + "\n" for e in trail).encode(),
            DECISIONS: (json.dumps(decisions, indent=1, sort_keys=True) + "\n").encode(),
        }
        with self.lock:
            self._cache = None
            try:
                return relabel_dataset(self.root, corrections, sidecars=sidecars)
            except BaseException:
                # past its journal a relabel is finished by recovery (then it did land); before it,
                # recovery only sweeps temp files and the dataset is as it was
                if recover_relabel(self.root):
                    log.warning(
                        "a write-back into %s failed after its journal; recovery finished it", self.root
                    )
                    return self.manifest()
                raise

    def export(self, dst: Path, fmt: str, *, keep: Callable[[str], bool], provenance: dict[str, Any]) -> int:
        """The reviewed set (images ``keep(key)`` says yes to) as a new dataset of format ``fmt``."""
        with self.lock:  # a consistent snapshot: no decision lands halfway through
            splits = {
                rec.file_name: entry.split
                for entry in self.manifest().files
                for rec in ((entry.record,) if entry.record is not None else entry.samples)
                if entry.split
            }
            result = convert_dataset(
                self.root,
                dst,
                fmt,
                include=lambda rec: keep(item_key(rec.file_name)),
                splits=splits,
                provenance=provenance,
            )
        return result.count


def zip_folder(folder: Path) -> bytes:
    """A folder as an uncompressed zip (PNG and DICOM are compressed already)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()
