"""Training side of the angle model: augmentation keeps labels on the pixels (and swaps sides on a
flip), every screened backbone builds, a tiny model learns, export matches PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hipgen.angle.geometry import CROP_SPAN  # noqa: E402
from hipgen.angle.measure import AngleMeasurer, MeasurerConfig  # noqa: E402
from hipgen.inference.backend import OrtBackend  # noqa: E402
from training.angle.augment import crop_sample, locator_sample  # noqa: E402
from training.angle.data import HipSet, render_set, shifted_spec  # noqa: E402
from training.angle.export import export_onnx, parity, sha256, write_model  # noqa: E402
from training.angle.models import SCREEN_BACKBONES, KeypointNet, build_trunk  # noqa: E402
from training.angle.train import TorchModelFn, TrainConfig, load, save, shrunk_for, train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_set() -> HipSet:
    """Upright, unrotated studies (``tidy``), so each test knows where the hips are."""
    return render_set(6, 11, distribution="tidy", sizes=(256, 320), workers=1, progress=False)


def test_locator_flip_swaps_left_and_right(tiny_set: HipSet) -> None:
    img, pts = tiny_set.image(0), tiny_set.points[0]
    rng = np.random.default_rng(0)
    _, plain = locator_sample(img, pts, np.random.default_rng(0), 192, flip=False, quarter_turns=0)
    _, flipped = locator_sample(img, pts, rng, 192, flip=True, quarter_turns=0)
    # unflipped upright: the patient's right head is on image left; after a flip the label follows the
    # convention, so "right" is again the head on image left
    assert plain[0, 0] < plain[1, 0]
    assert flipped[0, 0] < flipped[1, 0]
    # and the flipped "right" is the original left head mirrored: mean x of both heads ≈ mirrored
    assert abs((flipped[0, 0] + plain[1, 0]) - 191) < 40  # small random rotation/shift/scale allowed


def test_locator_quarter_turn_moves_targets_with_pixels(tiny_set: HipSet) -> None:
    img, pts = tiny_set.image(1), tiny_set.points[1]
    x, t = locator_sample(img, pts, np.random.default_rng(5), 192, flip=False, quarter_turns=1)
    # turned 90° clockwise: the head-to-head line is (nearly) vertical
    d = t[1] - t[0]
    assert abs(d[1]) > 3 * abs(d[0])
    for p in t:  # every target lies on a bright femoral head, not on background
        xi, yi = np.clip(np.round(p).astype(int), 2, 189)
        assert x[yi - 2 : yi + 3, xi - 2 : xi + 3].mean() > np.median(x)


def test_crop_sample_head_at_centre_rim_craniolateral(tiny_set: HipSet) -> None:
    for i in range(len(tiny_set)):
        for side in (0, 1):
            crop, t, r, big = crop_sample(
                tiny_set.image(i), tiny_set.points[i], tiny_set.radii[i], side, None, 128, CROP_SPAN
            )
            assert crop.shape == (128, 128)
            assert t[0] == pytest.approx([63.5, 63.5])
            # the rim is cranial (−y) and its angle from the frame's x axis (towards the other head) is
            # the Norberg angle: lateral of the head for NA > 90°, medial below
            na = tiny_set.angles()[i][side]
            assert t[1][1] < 63.5
            assert np.degrees(np.arctan2(63.5 - t[1][1], t[1][0] - 63.5)) == pytest.approx(na, abs=1e-6)
            d = float(np.linalg.norm(tiny_set.points[i][0] - tiny_set.points[i][1]))
            assert r == pytest.approx(tiny_set.radii[i][side] * 128 / (CROP_SPAN * d))
            assert big == float(na >= 105.0)


def test_shrunk_set_gives_the_same_crops_and_labels() -> None:
    """Training pre-shrinks big renders once; the crops it then draws must be the ones drawn from the
    full-size image (where the warp shrinks on its own)."""
    big = render_set(3, 3, sizes=(1536,), workers=1, progress=False)  # one of them is not square
    cfg = TrainConfig(task="keypoints", steps=1)
    small = shrunk_for(cfg, big)
    assert all(max(a.shape) < 0.8 * max(b.shape) for a, b in zip(small.images, big.images, strict=True))
    for i in range(len(big)):
        a = crop_sample(big.image(i), big.points[i], big.radii[i], 1, None, 128, CROP_SPAN)
        b = crop_sample(small.image(i), small.points[i], small.radii[i], 1, None, 128, CROP_SPAN)
        # equal up to the shrunk image's whole-pixel size (x and y scales differ by < 0.2 %)
        np.testing.assert_allclose(a[0], b[0], atol=0.03)
        np.testing.assert_allclose(a[1], b[1], atol=0.05)
        assert a[2] == pytest.approx(b[2], rel=2e-3) and a[3] == b[3]
    np.testing.assert_allclose(small.angles(), big.angles(), atol=0.05)  # the same sub-pixel anisotropy


def test_shifted_spec_shifts_what_it_says() -> None:
    from hipgen.phantom.spec import spec_for_seed

    base = spec_for_seed("population", 7)
    s = shifted_spec(base, np.random.default_rng(1))
    assert s.dose < 150 and s.electronic_noise >= 6 and s.blur_px >= 1.5
    assert (s.na_left, s.na_right) == (base.na_left, base.na_right)  # the label distribution is unchanged


@pytest.mark.parametrize("name", SCREEN_BACKBONES)
def test_every_screened_backbone_builds(name: str) -> None:
    for head in ("heatmap", "regression"):
        net = KeypointNet(name, 2, input_size=64, head=head, extras=True, width=16).eval()
        with torch.no_grad():
            out = net(torch.rand(2, 1, 64, 64))
        assert out["keypoints"].shape == (2, 2, 2)
        assert out["radius"].shape == (2, 1) and bool((out["radius"] > 0).all())
        if head == "heatmap":
            assert float(out["keypoints"].min()) >= 0 and float(out["keypoints"].max()) <= 63.5


def test_local_weights_are_loaded(tmp_path) -> None:
    import torchvision

    model = torchvision.models.get_model("resnet18", weights=None)
    torch.nn.init.constant_(model.conv1.weight, 0.125)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    trunk = build_trunk("resnet18", tmp_path / "w.pt")
    assert torch.all(trunk[0].weight == 0.125)
    with pytest.raises(ValueError, match="unknown torchvision backbone"):
        build_trunk("not_a_net")


def test_tiny_keypoint_model_learns(tiny_set: HipSet) -> None:
    cfg = TrainConfig(
        task="keypoints", backbone="resnet18", input_size=64, steps=40, batch_size=8, width=16, lr=3e-3
    )
    res = train(cfg, tiny_set, progress=False)
    losses = [h["total"] for h in res.history]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_export_parity_and_manifest(tmp_path, tiny_set: HipSet, head: str) -> None:
    loc_cfg = TrainConfig(
        task="locator", backbone="resnet18", head=head, input_size=64, steps=2, batch_size=2, width=16
    )
    kp_cfg = TrainConfig(
        task="keypoints", backbone="resnet18", head=head, input_size=64, steps=2, batch_size=2, width=16
    )
    loc, kp = train(loc_cfg, tiny_set, progress=False), train(kp_cfg, tiny_set, progress=False)
    save(kp, tmp_path / "run" / "keypoints")
    net, cfg = load(tmp_path / "run" / "keypoints")
    assert cfg.head == head
    x = np.random.default_rng(0).random((5, 1, 64, 64), np.float32)
    onnx_path = export_onnx(net, tmp_path / "m.onnx")
    diffs = parity(net, onnx_path, x)
    assert diffs["keypoints"] < 1e-3 and diffs["radius"] < 1e-3 and diffs["prob_big"] < 1e-5
    pipeline = {
        "locator": "angle_locator",
        "locator_size": 64,
        "crop_size": 64,
        "crop_span": CROP_SPAN,
        "refine_passes": 2,
    }
    repo = tmp_path / "repo"
    write_model(
        repo, "angle_locator", loc.net, loc_cfg, version="t", command="test", data={"source": "phantom"}
    )
    d = write_model(
        repo, "angle_keypoints", net, cfg, version="t", command="test", data={}, pipeline=pipeline
    )
    manifest = json.loads((d / "MANIFEST.json").read_text())
    assert manifest["files"]["1/model.onnx"]["sha256"] == sha256(d / "1" / "model.onnx")
    assert manifest["onnx"]["opset"] >= 17 and manifest["pipeline"]["crop_size"] == 64
    assert "research" in manifest["intended_use"]
    cfg_txt = (d / "config.pbtxt").read_text()
    assert "dynamic_batching" in cfg_txt and "preferred_batch_size" in cfg_txt and "instance_group" in cfg_txt
    # the deployed pipeline (ONNX Runtime) and the training pipeline (PyTorch) agree on whole images
    from hipgen.angle.measure import measurer_from_backend

    ort_m = measurer_from_backend(OrtBackend(repo))
    torch_m = AngleMeasurer(TorchModelFn(loc.net), TorchModelFn(net), MeasurerConfig(64, 64, CROP_SPAN, 2))
    images = [tiny_set.image(i) for i in range(3)]
    for a, b in zip(ort_m.measure(images), torch_m.measure(images), strict=True):
        assert np.allclose(a.keypoints.left_rim, b.keypoints.left_rim, atol=1e-2)
        assert a.prob_big_right == pytest.approx(b.prob_big_right, abs=1e-4)


def test_lineage_follows_resumed_runs(tmp_path) -> None:
    from training.angle.export import lineage, training_facts

    def run(name: str, seed: int, resume: str | None, locator_steps: int) -> None:
        (tmp_path / name).mkdir()
        report = {
            "command": f"hipgen train angle --out {name}",
            "recipe": {"seed": seed, "resume": resume, "locator_steps": locator_steps, "keypoint_steps": 5},
            "train_images": 10 + seed,
            "train_sizes": [640],
        }
        (tmp_path / name / "eval.json").write_text(json.dumps(report))

    run("first", 0, None, 5)
    run("second", 1, str(tmp_path / "first"), 0)
    run("third", 2, "elsewhere/second", 0)  # relative to where training ran: found beside "third"
    stages = lineage(tmp_path / "third")
    assert [s["run"] for s in stages] == ["first", "second", "third"]
    assert [s["images"] for s in stages] == [10, 11, 12] and stages[0]["render_sizes"] == [640]
    # the locator was trained only in "first"; the keypoint model in every stage
    loc_command, loc_data = training_facts(stages, "locator")
    kp_command, kp_data = training_facts(stages, "keypoints")
    assert loc_command == "hipgen train angle --out first" and loc_data["images"] == 10
    assert kp_command == "hipgen train angle --out third" and kp_data["images"] == 33
    run("orphan", 3, str(tmp_path / "gone"), 5)
    orphan = lineage(tmp_path / "orphan")
    assert "missing" in orphan[0] and orphan[1]["run"] == "orphan"


def test_resumed_stage_keeps_or_changes_the_crop_span(tmp_path, tiny_set: HipSet) -> None:
    from training.angle.recipe import AngleRecipe, _stage

    first = TrainConfig(
        task="keypoints", backbone="resnet18", input_size=64, steps=1, batch_size=2, width=16, crop_span=0.7
    )
    save(train(first, tiny_set, progress=False), tmp_path / "run" / "keypoints")
    common = dict(backbone="resnet18", head="heatmap", batch_size=2, seed=0, weights=None, input_size=64)
    kept = _stage(
        AngleRecipe(resume=str(tmp_path / "run")), "keypoints", 1, tiny_set, False, crop_span=None, **common
    )
    changed = _stage(
        AngleRecipe(resume=str(tmp_path / "run")), "keypoints", 1, tiny_set, False, crop_span=0.5, **common
    )
    fresh = _stage(AngleRecipe(), "keypoints", 1, tiny_set, False, crop_span=None, **common)
    with pytest.raises(ValueError, match="needs training steps"):  # a reused model keeps its geometry
        _stage(
            AngleRecipe(resume=str(tmp_path / "run")),
            "keypoints",
            0,
            tiny_set,
            False,
            crop_span=0.5,
            **common,
        )
    assert (kept.config.crop_span, changed.config.crop_span, fresh.config.crop_span) == (0.7, 0.5, CROP_SPAN)
    assert kept.config.width == 16  # the resumed architecture, whatever the defaults say
