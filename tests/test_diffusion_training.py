"""Training the angle-conditioned DDPM (tiny config, a few steps): the loss falls, a resumed run
continues exactly as the uninterrupted one, and bad inputs are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from training.diffusion.train import DiffusionConfig, DiffusionSet, load, train  # noqa: E402


def toy_set(n: int = 8, size: int = 16) -> DiffusionSet:
    """A bright disc whose column follows the left angle and whose row follows the right one."""
    rng = np.random.default_rng(0)
    na = rng.uniform(70, 130, (n, 2))
    yy, xx = np.mgrid[:size, :size]
    images = np.full((n, 1, size, size), -1.0, np.float32)
    for i, (left, right) in enumerate(na):
        cx, cy = (left - 70) / 60 * (size - 1), (right - 70) / 60 * (size - 1)
        images[i, 0][(xx - cx) ** 2 + (yy - cy) ** 2 < (size / 5) ** 2] = 1.0
    return DiffusionSet(images, na)


def config(**kw) -> DiffusionConfig:  # noqa: ANN003
    return DiffusionConfig(**({"size": 16, "tiny": True, "batch_size": 8, "lr": 1e-3} | kw))


def test_loss_falls(tmp_path: Path) -> None:
    run = train(config(steps=80, checkpoint_every=1000), toy_set(), tmp_path, progress=False)
    assert np.mean(run.losses[-20:]) < 0.6 * np.mean(run.losses[:10])
    model, cfg = load(tmp_path / "model")
    assert cfg.size == 16 and cfg.tiny
    saved, trained = model.state_dict(), run.model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    data = toy_set()
    straight = train(config(steps=6, checkpoint_every=3), data, tmp_path / "a", progress=False)
    train(config(steps=3, checkpoint_every=3), data, tmp_path / "b", progress=False)
    resumed = train(config(steps=6, checkpoint_every=3), data, tmp_path / "b", resume=True, progress=False)
    assert resumed.losses == straight.losses[3:]
    resumed_state = resumed.model.state_dict()
    for name, a in straight.model.state_dict().items():
        torch.testing.assert_close(a, resumed_state[name], msg=name)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data is \(1, 16, 16\), the config says 1 × 32²"):
        train(config(size=32, steps=1), toy_set(), tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(config(steps=1), toy_set(), tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(ValueError, match="images for"):
        DiffusionSet(np.zeros((2, 1, 8, 8), np.float32), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="cond_drop"):
        DiffusionConfig(cond_drop=1.0)
