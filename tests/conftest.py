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


@pytest.fixture(scope="session")
def tiny_generator_repo(tmp_path_factory: pytest.TempPathFactory, angle_repo: Path) -> Path:
    """A model repository with a tiny teacher (``generator_ddpm``, 32 px, a few training steps) and its
    tiny LCM student (``generator_lcm``), both exported the way ``hipgen export generator`` does, beside
    the committed angle models that label what they make. Needs the training stack."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    import numpy as np

    from training.diffusion.distill import DistillConfig, distill
    from training.diffusion.release import export_generator
    from training.diffusion.train import DiffusionConfig, DiffusionSet, train

    root = tmp_path_factory.mktemp("generators")
    rng = np.random.default_rng(0)
    data = DiffusionSet(rng.uniform(-1, 1, (8, 1, 32, 32)).astype(np.float32), rng.uniform(70, 130, (8, 2)))
    config = DiffusionConfig(size=32, tiny=True, steps=3, batch_size=4, checkpoint_every=3)
    teacher = train(config, data, root / "teacher", progress=False)
    distill(
        teacher.model,
        config,
        DistillConfig(steps=2, batch_size=4, checkpoint_every=2),
        data,
        root / "student",
        progress=False,
    )
    repo = root / "repo"
    export_generator(root / "teacher", repo, "generator_ddpm", version="tiny")
    export_generator(root / "student", repo, "generator_lcm", version="tiny-lcm")
    for name in ("angle_keypoints", "angle_locator"):
        (repo / name).symlink_to((angle_repo / name).resolve())
    return repo


@pytest.fixture(scope="session")
def score_folders(tmp_path_factory: pytest.TempPathFactory, angle_repo: Path) -> dict[str, Path]:
    """Two small sets to score, made by the CLI as a user would: ``real`` — 16 phantom studies cut to
    pelvis views (``hipgen views``); ``synthetic`` — 12 images from the committed LCM generator at
    angles drawn in 70–130° (``hipgen generate --na-range``), with generation.jsonl."""
    from typer.testing import CliRunner

    from hipgen.cli import app

    if not (angle_repo / "generator_lcm").is_dir():
        pytest.skip(f"{angle_repo} has no generator_lcm")
    root = tmp_path_factory.mktemp("score")
    runner = CliRunner()
    for args in (
        ["phantom", "-o", str(root / "studies"), "-n", "16", "--size", "384", "--seed", "5"],
        ["views", "--data", str(root / "studies"), "-o", str(root / "real"), "--repo", str(angle_repo)],
        [
            "generate", "-o", str(root / "synthetic"), "--na-range", "70", "130", "-n", "12",
            "--sampler", "lcm", "--repo", str(angle_repo), "--seed", "3",
        ],
    ):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    return {"real": root / "real", "synthetic": root / "synthetic", "studies": root / "studies"}


@pytest.fixture
def s3_fs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1 (never AWS): the AWS_* variables point fsspec/s3fs (and every
    server started in this process) at it; yields an s3 filesystem on it."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }.items():
            monkeypatch.setenv(k, v)
        yield fsspec.filesystem("s3", skip_instance_cache=True)
    finally:
        server.stop()
