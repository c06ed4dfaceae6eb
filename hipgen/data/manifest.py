"""Bookkeeping of a dataset's files: what was written (manifest, sha256 per file, DESIGN §6) and what a
reader had to skip (:class:`ReadReport`), so that no file is ever dropped silently."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from hipgen import __version__
from hipgen.data.images import write_atomic
from hipgen.data.record import LabelRecord
from hipgen.errors import CorruptFileError, InputError

MANIFEST_NAME = "manifest.json"
SCHEMA = "hipgen.manifest/1"
OnError = Literal["raise", "skip"]


# --- reading: skip-and-report ---------------------------------------------------------------------
@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str
    error: str  # the InputError subclass name


@dataclass
class ReadReport:
    """What a folder reader did not yield, and why (``on_error="skip"``), plus non-fatal findings."""

    read: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def handle(self, err: InputError, on_error: OnError) -> None:
        """Raise ``err`` or record it, as the caller asked."""
        if on_error == "raise":
            raise err
        if on_error != "skip":
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.skipped.append(Skipped(err.source or "", err.reason, type(err).__name__))

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "skipped": [s.__dict__ for s in self.skipped], "warnings": self.warnings}


# --- writing: one entry per file ------------------------------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    """One stored file. ``record`` for an image file; ``samples`` for an archive (webdataset shard)."""

    path: str  # POSIX, relative to the dataset root
    sha256: str
    bytes: int
    split: str | None = None
    record: LabelRecord | None = None
    samples: tuple[LabelRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "split": self.split,
        }
        if self.record is not None:
            out["record"] = self.record.to_dict()
        if self.samples:
            out["samples"] = [r.to_dict() for r in self.samples]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> FileEntry:
        rec = d.get("record")
        return cls(
            path=str(d["path"]),
            sha256=str(d["sha256"]),
            bytes=int(d["bytes"]),
            split=d.get("split"),
            record=LabelRecord.from_mapping(rec, source) if rec is not None else None,
            samples=tuple(LabelRecord.from_mapping(r, source) for r in d.get("samples", ())),
        )


def safe_relpath(name: str, source: str | None = None) -> str:
    """``name`` as a POSIX path inside the dataset; absolute paths and ``..`` are refused (a label must
    never make a reader or writer touch a file outside the dataset)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
        raise InputError(source, f"file name {name!r} must be a relative path inside the dataset")
    return str(p)


def store(
    root: Path,
    rel: str,
    data: bytes,
    *,
    split: str | None = None,
    record: LabelRecord | None = None,
    samples: tuple[LabelRecord, ...] = (),
) -> FileEntry:
    """Write ``data`` atomically under ``root`` and return its manifest entry."""
    write_atomic(root / rel, data)
    return bytes_entry(rel, data, split=split, record=record, samples=samples)


def bytes_entry(
    rel: str,
    data: bytes,
    *,
    split: str | None = None,
    record: LabelRecord | None = None,
    samples: tuple[LabelRecord, ...] = (),
) -> FileEntry:
    """The entry of a file whose bytes are in hand (written, staged or about to be put elsewhere)."""
    return FileEntry(rel, hashlib.sha256(data).hexdigest(), len(data), split, record, samples)


def entry_for(
    root: Path,
    rel: str,
    *,
    split: str | None = None,
    record: LabelRecord | None = None,
    samples: tuple[LabelRecord, ...] = (),
) -> FileEntry:
    """The entry of a file that something else already wrote."""
    sha, size = sha256_file(root / rel)
    return FileEntry(rel, sha, size, split, record, samples)


def sidecar_paths(root: Path) -> set[str]:
    """Files the manifest lists as belonging to the data set without being samples (e.g. the phantom
    specs), so that readers pass over them quietly; empty when there is no readable manifest."""
    try:
        m = read_manifest(root)
    except (InputError, OSError):
        return set()
    return {f.path for f in m.files if f.record is None and not f.samples}


def sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


# --- the manifest ---------------------------------------------------------------------------------
@dataclass
class Manifest:
    format: str
    files: list[FileEntry]
    provenance: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    hipgen_version: str = __version__

    @property
    def split_counts(self) -> dict[str, int]:
        """Labelled images per split (``"none"`` for images written without one)."""
        c: Counter[str] = Counter()
        for e in self.files:
            n = len(e.samples) + (e.record is not None)
            if n:
                c[e.split or "none"] += n
        return dict(sorted(c.items()))

    @property
    def generators(self) -> list[dict[str, Any]]:
        """Distinct (generator, model_version) of the synthetic images, with counts."""
        c: Counter[tuple[str, str]] = Counter()
        for e in self.files:
            for r in (*e.samples, *([e.record] if e.record else [])):
                if r.synthetic:
                    c[(r.generator or "", r.model_version or "")] += 1
        return [{"generator": g, "model_version": v, "images": n} for (g, v), n in sorted(c.items())]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "format": self.format,
            "created_at": self.created_at,
            "hipgen_version": self.hipgen_version,
            "provenance": self.provenance,
            "preprocessing": self.preprocessing,
            "split_counts": self.split_counts,
            "generators": self.generators,
            "files": [e.to_dict() for e in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> Manifest:
        return cls(
            format=str(d["format"]),
            files=[FileEntry.from_dict(e, source) for e in d["files"]],
            provenance=dict(d.get("provenance") or {}),
            preprocessing=d.get("preprocessing"),
            created_at=str(d["created_at"]),
            hipgen_version=str(d["hipgen_version"]),
        )


def encode_manifest(manifest: Manifest) -> bytes:
    """The bytes of ``manifest.json`` (one encoding, whoever writes it)."""
    return (json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n").encode()


def write_manifest(root: Path | str, manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST_NAME
    write_atomic(path, encode_manifest(manifest))
    return path


def read_manifest(root: Path | str) -> Manifest:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(path, "no manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise CorruptFileError(path, f"not a {SCHEMA} manifest")
        return Manifest.from_dict(data, str(path))
    except InputError:
        raise
    except (ValueError, KeyError, TypeError) as e:  # JSON, UTF-8 and shape errors
        raise CorruptFileError(path, f"manifest does not parse ({type(e).__name__}: {e})") from None


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_manifest(root: Path | str) -> VerifyReport:
    """Re-hash every file the manifest lists; report missing, resized or changed files, and files the
    manifest does not list."""
    root = Path(root)
    report = VerifyReport()
    files = read_manifest(root).files
    listed = {e.path for e in files} | {MANIFEST_NAME}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() not in listed:
            report.problems.append((p.relative_to(root).as_posix(), "not in the manifest"))
    for e in files:
        report.checked += 1
        try:
            rel = safe_relpath(e.path, MANIFEST_NAME)
        except InputError as err:
            report.problems.append((e.path, err.reason))
            continue
        if not (root / rel).is_file():
            report.problems.append((e.path, "missing"))
            continue
        sha, size = sha256_file(root / rel)
        if size != e.bytes:
            report.problems.append((e.path, f"size {size} bytes, manifest says {e.bytes}"))
        elif sha != e.sha256:
            report.problems.append((e.path, "sha256 differs from the manifest"))
    return report
