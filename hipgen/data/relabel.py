"""Corrected labels written back into an existing dataset, in place, all files or none.

A label lives in more than one file (image folders: ``metadata.csv``, the PNG's text chunks and the
manifest; webdataset: the shard's json, txt and png; DICOM: the private block and the manifest), so one
correction changes several files. Every new file is first staged as a temp file in the dataset root
(nothing visible changes), then a journal lists the renames and removals, then the renames happen and the
manifest goes last. A failure before the journal leaves the dataset as it was; a crash after it is
finished by :func:`recover_relabel` (redo), which every relabel runs first. A lock on the dataset folder
keeps two relabels (review requests) from interleaving.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import secrets
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from hipgen.data.classfolders import CLASS_FOLDERS, class_folder
from hipgen.data.imagefolder import METADATA_NAME, png_text
from hipgen.data.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, encode_png, write_atomic
from hipgen.data.keypoints import encode_csv, read_labels_csv
from hipgen.data.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    bytes_entry,
    encode_manifest,
    read_manifest,
    safe_relpath,
)
from hipgen.data.record import LabelRecord
from hipgen.errors import CorruptFileError

try:
    import fcntl
except ImportError:  # not on Windows: relabels there are not locked against each other
    fcntl = None  # type: ignore[assignment]

JOURNAL_NAME = ".relabel-journal.json"
JOURNAL_SCHEMA = "hipgen.relabel-journal/1"
ANGLE_TOLERANCE_DEG = 1e-6
_TEMP = re.compile(r"\.relabel-[0-9a-f]+-\d{4,}\.tmp")
_PROVENANCE = ("synthetic", "generator", "model_version", "seed")
_NO_SIDECARS: Mapping[str, bytes] = MappingProxyType({})


# --- checks -----------------------------------------------------------------------------------------
def check_correction(new: LabelRecord, old: LabelRecord | None = None) -> None:
    """ValueError unless ``new``'s angles are the ones its keypoints measure (a correction moves points;
    :meth:`LabelRecord.with_keypoints` re-measures) and, given ``old``, its provenance is ``old``'s (a
    correction changes labels, never where the image came from)."""
    kp = new.keypoints()
    for side, stated, measured in (("left", new.na_left, kp.na_left), ("right", new.na_right, kp.na_right)):
        if not abs(stated - measured) < ANGLE_TOLERANCE_DEG:
            raise ValueError(
                f"{new.file_name}: na_{side} {stated!r} is not the angle its keypoints measure "
                f"({measured!r}); re-measure with LabelRecord.with_keypoints"
            )
    if old is not None:
        changed = [k for k in _PROVENANCE if getattr(new, k) != getattr(old, k)]
        if changed:
            raise ValueError(f"{old.file_name}: a correction cannot change {', '.join(changed)}")


def _read_listed(root: Path, e: FileEntry) -> bytes:
    """A file's bytes, refused when they are not what the manifest says (never build on a changed file)."""
    data = (root / safe_relpath(e.path, MANIFEST_NAME)).read_bytes()
    now = bytes_entry(e.path, data)
    if (now.bytes, now.sha256) != (e.bytes, e.sha256):
        raise CorruptFileError(root / e.path, "file differs from the manifest; run verify_manifest")
    return data


def _check_target(root: Path, rel: str) -> None:
    """A path that a rename can land on: no file where a folder must be, no folder where the file goes
    (found now, not half-way through the renames)."""
    p = root / rel
    if p.is_dir():
        raise ValueError(f"{rel}: a folder is in the way")
    for parent in p.relative_to(root).parents:
        if parent != Path(".") and (root / parent).exists() and not (root / parent).is_dir():
            raise ValueError(f"{rel}: {parent.as_posix()} is a file, not a folder")


# --- PNG, tar: the same pixels with new labels -----------------------------------------------------
def retext_png(data: bytes, text: Mapping[str, str], *, source: str = "<png>") -> bytes:
    """``data`` with ``text`` as its text chunks, the pixels re-encoded at the same bit depth and checked
    to be identical; ``data`` itself when its chunks already say that."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if dict(getattr(img, "text", {})) == dict(text):
        return data
    if img.mode == "L":
        bits, arr = 8, np.asarray(img, dtype=np.uint8)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        bits, arr = 16, np.asarray(img).astype(np.uint16)
    else:
        raise CorruptFileError(source, f"PNG mode {img.mode} is not a grey image hipgen wrote")
    out = encode_png(arr.astype(np.float64) / (2**bits - 1), bits=bits, text=dict(text))
    back = Image.open(io.BytesIO(out))
    if not np.array_equal(np.asarray(back).astype(arr.dtype), arr):
        raise CorruptFileError(source, "re-encoding the PNG would change its pixels")
    return out


def rewrite_shard(data: bytes, records: Mapping[str, LabelRecord], *, source: str = "<tar>") -> bytes:
    """A webdataset shard with new labels for the samples named in ``records`` (``<key>.png`` → record):
    their json, txt and png text; every other member and every tar header field kept."""
    from webdataset.tariterators import base_plus_ext

    out, found = io.BytesIO(), set()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for m in src.getmembers():
            body = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            key, ext = base_plus_ext(m.name)
            rec = records.get(f"{key}.png") if key is not None else None
            if rec is not None and body is not None:
                found.add(rec.file_name)
                body = _member(ext, body, rec, f"{source}:{m.name}")
            info = copy.copy(m)
            if body is not None:
                info.size = len(body)
                info.pax_headers = {k: v for k, v in m.pax_headers.items() if k != "size"}
            dst.addfile(info, io.BytesIO(body) if body is not None else None)
    missing = sorted(set(records) - found)
    if missing:
        raise CorruptFileError(source, f"shard holds no sample {', '.join(missing)} (the manifest says so)")
    return out.getvalue()


def _member(ext: str, body: bytes, rec: LabelRecord, source: str) -> bytes:
    """One member of a sample as :class:`hipgen.data.wds.WebDatasetWriter` writes it for ``rec``."""
    if ext == "json":
        return json.dumps(rec.to_dict()).encode()
    if ext == "txt":
        return rec.text.encode()
    if ext == "png":
        return retext_png(body, png_text(rec), source=source)
    return body


# --- the plan: what changes ------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """New contents by path, paths to remove, and the manifest's new file list."""

    writes: dict[str, bytes]
    removals: tuple[str, ...]
    files: list[FileEntry]


def _placed(fmt: str, key: str, rec: LabelRecord) -> str:
    """Where the corrected image belongs: class folders follow the labels, every other format keeps it."""
    if fmt != "classfolders":
        return key
    top, _, rest = key.partition("/")
    return f"{class_folder(rec)}/{rest if top in CLASS_FOLDERS.values() and rest else key}"


def _corrected(m: Manifest, corrections: Mapping[str, LabelRecord]) -> dict[str, LabelRecord]:
    """Each correction checked against the stored record, with ``file_name`` set to its new place."""
    stored = {r.file_name: r for e in m.files for r in (*e.samples, *([e.record] if e.record else []))}
    out: dict[str, LabelRecord] = {}
    for key, new in corrections.items():
        if key not in stored:
            raise ValueError(f"{key}: no image of that name in the dataset's manifest")
        check_correction(new, stored[key])
        new = replace(new, file_name=_placed(m.format, key, new))
        if new != stored[key]:
            out[key] = new
    return out


def _plan_images(root: Path, m: Manifest, fixes: dict[str, LabelRecord]) -> Plan:
    """imagefolder, classfolders, dicom: one file per image; image folders also rewrite metadata.csv."""
    from hipgen.data.dicom import relabelled_dicom_bytes

    writes: dict[str, bytes] = {}
    removals: list[str] = []
    files = list(m.files)
    for i, e in enumerate(files):
        new = fixes.get(e.record.file_name) if e.record is not None else None
        if new is None:
            continue
        old = _read_listed(root, e)
        src = str(root / e.path)
        data = (
            relabelled_dicom_bytes(old, new, source=src)
            if m.format == "dicom"
            else retext_png(old, png_text(new), source=src)
        )
        if new.file_name != e.path:
            if new.file_name in writes or (root / new.file_name).exists():
                raise ValueError(f"{e.path}: cannot move to {new.file_name}, which exists")
            _check_target(root, new.file_name)
            removals.append(e.path)
        if data != old or new.file_name != e.path:
            writes[new.file_name] = data
        files[i] = bytes_entry(new.file_name, data, split=e.split, record=new)
    if m.format != "dicom":
        writes[METADATA_NAME] = _metadata(root, m, fixes)
    return Plan(writes, tuple(removals), files)


def _metadata(root: Path, m: Manifest, fixes: dict[str, LabelRecord]) -> bytes:
    listed = next((e for e in m.files if e.path == METADATA_NAME), None)
    if listed is None:
        raise CorruptFileError(root / MANIFEST_NAME, f"{METADATA_NAME} is not listed")
    _read_listed(root, listed)
    rows = read_labels_csv(root / METADATA_NAME)
    missing = sorted(set(fixes) - {r.file_name for r in rows})
    if missing:
        raise CorruptFileError(root / METADATA_NAME, f"no row for {', '.join(missing)}")
    return encode_csv(fixes.get(r.file_name, r) for r in rows)


def _plan_shards(root: Path, m: Manifest, fixes: dict[str, LabelRecord]) -> Plan:
    writes: dict[str, bytes] = {}
    files = list(m.files)
    for i, e in enumerate(files):
        mine = {r.file_name: fixes[r.file_name] for r in e.samples if r.file_name in fixes}
        if not mine:
            continue
        data = rewrite_shard(_read_listed(root, e), mine, source=str(root / e.path))
        writes[e.path] = data
        samples = tuple(mine.get(r.file_name, r) for r in e.samples)
        files[i] = bytes_entry(e.path, data, split=e.split, samples=samples)
    return Plan(writes, (), files)


def _with_extra_files(root: Path, plan: Plan, sidecars: Mapping[str, bytes]) -> Plan:
    """Sidecars added to the plan, and every written non-image file listed with its new hash."""
    writes = dict(plan.writes)
    images = {e.path for e in plan.files if e.record is not None or e.samples} | set(plan.removals)
    for name, data in sidecars.items():
        rel = safe_relpath(name, "sidecar")
        suffix = Path(rel).suffix.lower()
        own = (MANIFEST_NAME, JOURNAL_NAME, METADATA_NAME)  # the labels table is never a sidecar
        if rel in images or rel in writes or rel in own or _TEMP.fullmatch(rel):
            raise ValueError(f"sidecar {rel}: that name belongs to the dataset's own files")
        if suffix in (*IMAGE_SUFFIXES, *DICOM_SUFFIXES, ".tar"):
            raise ValueError(f"sidecar {rel}: a {suffix} file would be read as data")
        _check_target(root, rel)
        writes[rel] = bytes(data)
    files = list(plan.files)
    index = {e.path: i for i, e in enumerate(files)}
    for rel, data in writes.items():
        if rel in images:
            continue
        i = index.get(rel)
        entry = bytes_entry(rel, data, split=files[i].split if i is not None else None)
        if i is None:
            files.append(entry)
        else:
            files[i] = entry
    return Plan(writes, plan.removals, files)


# --- the journal: stage, then commit ----------------------------------------------------------------
@dataclass(frozen=True)
class Journal:
    """The renames (staged temp → final path, the manifest last) and removals of one relabel."""

    renames: tuple[tuple[str, str], ...]
    removals: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"schema": JOURNAL_SCHEMA, "renames": self.renames, "removals": self.removals}, indent=1
        ).encode()

    @classmethod
    def parse(cls, data: bytes, source: Path) -> Journal:
        try:
            d = json.loads(data)
            if d.get("schema") != JOURNAL_SCHEMA:
                raise ValueError(f"not a {JOURNAL_SCHEMA} journal")
            renames = tuple((str(t), safe_relpath(str(f))) for t, f in d["renames"])
            removals = tuple(safe_relpath(str(r)) for r in d["removals"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptFileError(source, f"relabel journal does not parse ({e})") from None
        if not renames or renames[-1][1] != MANIFEST_NAME or not all(_TEMP.fullmatch(t) for t, _ in renames):
            raise CorruptFileError(source, "relabel journal is not one that relabel_dataset writes")
        return cls(renames, removals)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _stage(root: Path, writes: Mapping[str, bytes]) -> tuple[tuple[str, str], ...]:
    """Every new file as a temp file in the root, as (temp, final) pairs; on any failure the temp files
    written so far go, and the dataset is as it was."""
    token = secrets.token_hex(6)
    renames: list[tuple[str, str]] = []
    try:
        for i, (rel, data) in enumerate(writes.items()):
            tmp = f".relabel-{token}-{i:04d}.tmp"
            renames.append((tmp, rel))
            _write_new(root / tmp, data)
    except BaseException:
        for tmp, _ in renames:
            with contextlib.suppress(OSError):
                (root / tmp).unlink()
        raise
    return tuple(renames)


def _redo_rename(root: Path, tmp: str, rel: str) -> None:
    """Rename one staged file; a temp file that is gone was renamed by the run that crashed."""
    if (root / tmp).exists():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / tmp, root / rel)
    elif not (root / rel).exists():
        raise CorruptFileError(root / JOURNAL_NAME, f"staged file {tmp} for {rel} is gone; cannot finish")


def _apply(root: Path, journal: Journal) -> None:
    for tmp, rel in journal.renames[:-1]:
        _redo_rename(root, tmp, rel)
    for rel in journal.removals:
        (root / rel).unlink(missing_ok=True)
    _redo_rename(root, *journal.renames[-1])  # the manifest: from here on the dataset verifies
    (root / JOURNAL_NAME).unlink()


def _commit(root: Path, plan: Plan, manifest: bytes) -> None:
    journal = Journal(_stage(root, {**plan.writes, MANIFEST_NAME: manifest}), plan.removals)
    try:
        write_atomic(root / JOURNAL_NAME, journal.to_bytes())
    except BaseException:
        for tmp, _ in journal.renames:
            with contextlib.suppress(OSError):
                (root / tmp).unlink()
        raise
    _apply(root, journal)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the dataset folder itself (no lock file for verify_manifest to trip on)."""
    if fcntl is None:
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _recover(root: Path) -> bool:
    journal = root / JOURNAL_NAME
    if journal.is_file():
        _apply(root, Journal.parse(journal.read_bytes(), journal))
        return True
    for p in root.iterdir():  # temp files of a relabel killed before its journal existed
        if _TEMP.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)
    return False


# --- public -----------------------------------------------------------------------------------------
def recover_relabel(root: Path | str) -> bool:
    """Finish a relabel that a crash interrupted after its journal was written (True), or sweep the temp
    files of one interrupted before (False); afterwards the dataset is either relabelled or untouched."""
    root = Path(root)
    with _locked(root):
        return _recover(root)


def relabel_dataset(
    root: Path | str, corrections: Mapping[str, LabelRecord], *, sidecars: Mapping[str, bytes] = _NO_SIDECARS
) -> Manifest:
    """Replace the label records of ``corrections`` (keyed by the ``file_name`` the manifest stores) in
    every file of the dataset that holds them, and store ``sidecars`` (relative path → bytes) with them,
    all atomically; returns the new manifest. A record's own ``file_name`` is ignored: class folders move
    an image whose class changes, every other format keeps its name. Other entries, the provenance and the
    preprocessing of the manifest are kept."""
    from hipgen.data.datasets import FORMATS, check_format

    root = Path(root)
    with _locked(root):
        _recover(root)
        m = read_manifest(root)
        check_format(m.format, FORMATS)
        fixes = _corrected(m, corrections)
        if not fixes and not sidecars:
            return m
        planner = _plan_shards if m.format == "webdataset" else _plan_images
        plan = planner(root, m, fixes) if fixes else Plan({}, (), list(m.files))
        plan = _with_extra_files(root, plan, sidecars)
        new = replace(m, files=plan.files)
        _commit(root, plan, encode_manifest(new))
    return new
