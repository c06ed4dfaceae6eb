"""Fixtures shared by several test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def angle_repo() -> Path:
    """The model repository the angle tests measure with: ``$HIPGEN_TEST_ANGLE_REPO``, else the committed
    default ``model_repository/``.

    It fails rather than skips when the repository lacks the angle models: a suite that silently
    skips the service it ships proves nothing.
    """
    repo = Path(os.environ.get("HIPGEN_TEST_ANGLE_REPO", REPO_ROOT / "model_repository"))
    missing = [m for m in ("angle_keypoints", "angle_locator") if not any((repo / m).glob("*/model.onnx"))]
    if missing:
        pytest.fail(
            f"model repository {repo} lacks {', '.join(missing)} (<model>/<version>/model.onnx): export the "
            "angle models there (`hipgen train angle`, `hipgen export angle`) or point "
            "HIPGEN_TEST_ANGLE_REPO at a repository that has them",
            pytrace=False,
        )
    return repo
