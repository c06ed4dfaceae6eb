"""Readers and writers of radiograph datasets: label records, image folders, class folders, webdataset
shards, keypoint files, DICOM; preprocessing, splits and manifests.

Names are imported lazily (PEP 562) so that ``import hipgen.data.record`` does not pull in OpenCV,
SciPy and webdataset.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LabelRecord": "record",
    "LABEL_COLUMNS": "record",
    "Radiograph": "images",
    "read_image": "images",
    "FORMATS": "datasets",
    "open_writer": "datasets",
    "iter_dataset": "datasets",
    "detect_format": "datasets",
    "Preprocessing": "preprocess",
    "split_records": "split",
    "Manifest": "manifest",
    "ReadReport": "manifest",
    "read_manifest": "manifest",
    "verify_manifest": "manifest",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
