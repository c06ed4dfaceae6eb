"""Writing one model entry of the Triton-layout ``model_repository/`` (shared by every export): file
digests for the MANIFEST, and the swap that installs a fully written entry in one rename."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def partial_dir(repo: str | Path, name: str) -> Path:
    """A fresh folder beside the live entry to write the new one into."""
    model_dir = Path(repo) / f".{name}.partial"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    return model_dir


def install(model_dir: Path, repo: str | Path, name: str) -> Path:
    """Swap the written ``model_dir`` in as ``repo/name``: a failed export leaves the old model whole and
    no stale version folder survives."""
    final_dir = Path(repo) / name
    if final_dir.exists():
        old = final_dir.with_name(f".{name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final_dir.rename(old)
        model_dir.rename(final_dir)
        shutil.rmtree(old)
    else:
        model_dir.rename(final_dir)
    return final_dir


__all__ = ["install", "partial_dir", "sha256"]
