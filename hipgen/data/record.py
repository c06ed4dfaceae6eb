"""The one label record (DESIGN §1) used by metadata.csv, JSON labels, manifests, CLI ``--json`` output
and the protos.

Values are kept at full float precision everywhere (``repr`` in text formats) so that every format
round-trips a label exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hipgen import anatomy
from hipgen.errors import LabelError

#: Column order of every tabular file hipgen writes.
LABEL_COLUMNS: tuple[str, ...] = (
    "file_name",
    "text",
    "na_left",
    "na_right",
    "left_head_x",
    "left_head_y",
    "right_head_x",
    "right_head_y",
    "left_rim_x",
    "left_rim_y",
    "right_rim_x",
    "right_rim_y",
    "left_radius",
    "right_radius",
    "class_left",
    "class_right",
    "grade_left",
    "grade_right",
    "synthetic",
    "generator",
    "model_version",
    "seed",
)
_FLOAT_COLUMNS = frozenset(LABEL_COLUMNS[2:14])
_PROVENANCE = ("synthetic", "generator", "model_version", "seed")


def caption(na_left: float, na_right: float) -> str:
    """The caption stating both angles, for text-conditioned generators (published-methods §A, §C)."""
    return (
        f"ventrodorsal hip-extended radiograph of a dog, Norberg angle left {na_left:.1f} degrees, "
        f"right {na_right:.1f} degrees"
    )


@dataclass(frozen=True)
class LabelRecord:
    """Labels of one image. Coordinates and radii are pixels of that file; angles are degrees."""

    file_name: str
    text: str
    na_left: float
    na_right: float
    left_head_x: float
    left_head_y: float
    right_head_x: float
    right_head_y: float
    left_rim_x: float
    left_rim_y: float
    right_rim_x: float
    right_rim_y: float
    left_radius: float
    right_radius: float
    class_left: str
    class_right: str
    grade_left: str
    grade_right: str
    synthetic: bool | None = None
    generator: str | None = None
    model_version: str | None = None
    seed: int | None = None

    @classmethod
    def from_keypoints(
        cls,
        file_name: str,
        kp: anatomy.HipKeypoints,
        *,
        threshold: float = anatomy.DEFAULT_THRESHOLD_DEG,
        scheme: str = anatomy.DEFAULT_SCHEME,
        text: str | None = None,
        **provenance: Any,
    ) -> LabelRecord:
        """Measure the angles from the keypoints (never trust a requested angle) and derive classes."""
        na_l, na_r = float(kp.na_left), float(kp.na_right)
        return cls(
            file_name=file_name,
            text=caption(na_l, na_r) if text is None else text,
            na_left=na_l,
            na_right=na_r,
            left_head_x=float(kp.left_head[0]),
            left_head_y=float(kp.left_head[1]),
            right_head_x=float(kp.right_head[0]),
            right_head_y=float(kp.right_head[1]),
            left_rim_x=float(kp.left_rim[0]),
            left_rim_y=float(kp.left_rim[1]),
            right_rim_x=float(kp.right_rim[0]),
            right_rim_y=float(kp.right_rim[1]),
            left_radius=float(kp.left_radius),
            right_radius=float(kp.right_radius),
            class_left=anatomy.hip_class(na_l, threshold),
            class_right=anatomy.hip_class(na_r, threshold),
            grade_left=anatomy.grade(na_l, scheme),
            grade_right=anatomy.grade(na_r, scheme),
            **provenance,
        )

    def keypoints(self) -> anatomy.HipKeypoints:
        return anatomy.HipKeypoints(
            left_head=(self.left_head_x, self.left_head_y),
            right_head=(self.right_head_x, self.right_head_y),
            left_rim=(self.left_rim_x, self.left_rim_y),
            right_rim=(self.right_rim_x, self.right_rim_y),
            left_radius=self.left_radius,
            right_radius=self.right_radius,
        )

    def with_keypoints(self, kp: anatomy.HipKeypoints, **changes: Any) -> LabelRecord:
        """The same record for new pixel coordinates (after a resize or crop): angles, classes and
        grades are re-measured, provenance is kept."""
        auto = self.text == caption(self.na_left, self.na_right)  # a generated caption follows the angles
        fresh = LabelRecord.from_keypoints(self.file_name, kp, text=None if auto else self.text)
        keep = {k: getattr(self, k) for k in _PROVENANCE}
        return replace(fresh, **{**keep, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Typed values (floats, bools, ints, None), in :data:`LABEL_COLUMNS` order."""
        return asdict(self)

    def to_row(self) -> dict[str, str]:
        """Text cells for CSV: floats as ``repr`` (exact round-trip), None as empty."""
        out: dict[str, str] = {}
        for k, v in asdict(self).items():
            if v is None:
                out[k] = ""
            elif isinstance(v, bool):
                out[k] = "true" if v else "false"
            else:
                out[k] = repr(float(v)) if isinstance(v, float) else str(v)
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], source: str | None = None) -> LabelRecord:
        """Parse a CSV row or a JSON object (strings or typed values). Unknown keys are ignored;
        missing or malformed required fields raise :class:`LabelError` naming them."""
        missing = [c for c in LABEL_COLUMNS[:18] if c not in row or row[c] in ("", None)]
        # text and grades can be derived; coordinates and angles cannot
        derivable = {"text", "class_left", "class_right", "grade_left", "grade_right"}
        hard_missing = [c for c in missing if c not in derivable]
        if hard_missing:
            raise LabelError(source, f"label is missing {', '.join(hard_missing)}")
        vals: dict[str, Any] = {}
        for f in fields(cls):
            raw = row.get(f.name)
            if f.name in _FLOAT_COLUMNS:
                try:
                    vals[f.name] = float(raw)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise LabelError(source, f"{f.name} is not a number: {raw!r}") from None
                if not math.isfinite(vals[f.name]):
                    raise LabelError(source, f"{f.name} is not finite: {raw!r}")
            elif f.name == "synthetic":
                vals[f.name] = _parse_bool(raw, source)
            elif f.name == "seed":
                vals[f.name] = None if raw in ("", None) else _parse_int(raw, source)
            else:
                vals[f.name] = None if raw in ("", None) else str(raw)
        rec = cls(**{**vals, **{k: vals[k] or "" for k in derivable}})
        return _fill_derived(rec)


def _fill_derived(rec: LabelRecord) -> LabelRecord:
    changes: dict[str, str] = {}
    if not rec.text:
        changes["text"] = caption(rec.na_left, rec.na_right)
    for side in ("left", "right"):
        na = getattr(rec, f"na_{side}")
        if not getattr(rec, f"class_{side}"):
            changes[f"class_{side}"] = anatomy.hip_class(na)
        if not getattr(rec, f"grade_{side}"):
            changes[f"grade_{side}"] = anatomy.grade(na)
    return replace(rec, **changes) if changes else rec


def _parse_bool(raw: Any, source: str | None) -> bool | None:
    if raw in ("", None):
        return None
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise LabelError(source, f"synthetic must be true or false, got {raw!r}")


def _parse_int(raw: Any, source: str | None) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    raise LabelError(source, f"seed is not an integer: {raw!r}")
