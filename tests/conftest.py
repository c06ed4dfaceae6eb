"""Fixtures shared by several test files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def serving_channel(settings: Any, timeout: float = 5.0) -> Iterator[Any]:
    """A real server from ``services.server.build_server`` on 127.0.0.1 and a ready channel to it;
    the server stops (no grace) when the block ends."""
    import grpc

    from services.server import build_server

    server, port = build_server(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=timeout)
            yield ch
    finally:
        server.stop(None).wait()
