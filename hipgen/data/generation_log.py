"""``generation.jsonl``: the angles each synthetic image was requested at, one JSON line per image
(``{"file_name", "requested_na_left", "requested_na_right", ...}``), written beside the images by
``hipgen generate`` and by dataset jobs, read by scoring (angle fidelity) and the review app (how far
the generator missed)."""

from __future__ import annotations

import json
from pathlib import Path

GENERATION_LOG = "generation.jsonl"


def read_generation_log(root: Path) -> dict[str, tuple[float, float]]:
    """Requested (left, right) angles by file name; empty when the folder has no log. Raises
    ``ValueError`` naming the line that is not a generation record."""
    log = root / GENERATION_LOG
    out: dict[str, tuple[float, float]] = {}
    if not log.is_file():
        return out
    for n, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["file_name"])] = (float(row["requested_na_left"]), float(row["requested_na_right"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{GENERATION_LOG} line {n} is not a generation record ({e})") from None
    return out
