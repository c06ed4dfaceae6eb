"""The scoring commands as a user runs them: ``hipgen views`` (pelvis views of whole studies),
``hipgen report`` (self-contained HTML + JSON), ``hipgen export backbone`` (an ImageNet-family feature
backbone from a local state dict, served by ONNX Runtime) and ``hipgen experiment augment``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hipgen.cli import app
from hipgen.data.imagefolder import iter_imagefolder
from hipgen.score.features import available_backbones, backbone_for

runner = CliRunner()


def test_views_are_the_generators_framing_with_labels_that_follow(score_folders: dict[str, Path]) -> None:
    views = list(iter_imagefolder(score_folders["real"]))
    studies = {r.file_name: r for r, _ in iter_imagefolder(score_folders["studies"])}
    assert len(views) == 16
    for rec, rad in views:
        assert rad.pixels.shape == (128, 128)
        src = studies[rec.file_name]  # same name, same angles (a similarity transform keeps them)
        assert rec.na_left == pytest.approx(src.na_left, abs=1e-6)
        kp = rec.keypoints()
        # heads centred and 1 / 2.4 of the side apart
        assert np.mean([kp.left_head[0], kp.right_head[0]]) == pytest.approx(63.5, abs=0.01)
        assert abs(kp.left_head[0] - kp.right_head[0]) == pytest.approx(128 / 2.4, rel=1e-6)


def test_views_of_unlabelled_images_are_cut_where_the_angle_model_finds_the_heads(
    score_folders: dict[str, Path], angle_repo: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in sorted(score_folders["studies"].glob("*.png"))[:3]:
        shutil.copy(p, bare / p.name)
    res = runner.invoke(
        app, ["views", "--data", str(bare), "-o", str(tmp_path / "v"), "--repo", str(angle_repo)]
    )
    assert res.exit_code == 0, res.output
    assert len(list(iter_imagefolder(tmp_path / "v"))) == 3
    res = runner.invoke(app, ["views", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "w")])
    assert res.exit_code == 2 and "no such folder" in res.output


def test_report_writes_readable_self_contained_html_and_json(
    score_folders: dict[str, Path], angle_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = ["report", "--real", str(score_folders["real"]), "--synthetic", str(score_folders["synthetic"])]
    training = ["--training", str(score_folders["studies"])]  # memorisation searched there, not in --real
    res = runner.invoke(
        app, [*args, "-o", str(out), "--repo", str(angle_repo), "--kid-subset-size", "8", *training]
    )
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert f"searched: {score_folders['studies']} (16 images)" in html
    for section in (
        "Metrics",
        "Angle fidelity",
        "Bland–Altman",
        "Per angle bin and class",
        "Samples",
        "Memorisation",
    ):
        assert section in html, section
    assert "angle_locator" in html  # the backbone is named
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 5  # plots embedded
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing external
    data = json.loads((out / "report.json").read_text())
    assert data["feature_backbone"] == "angle_locator" and data["candidate_count"] == 12
    names = {m["name"] for m in data["metrics"]}
    assert {"fid", "kid", "mmd", "precision", "recall", "ssim", "ms_ssim"} <= names
    assert sum(b["count"] for b in data["per_bin"]) == data["angle_fidelity"]["both"]["n"]
    assert data["memorisation"]["typical_training_nn_distance"] > 0
    bad = runner.invoke(app, [*args, "-o", str(tmp_path / "r2"), "--metrics", "fid,nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_export_backbone_serves_the_torch_features(
    score_folders: dict[str, Path], angle_repo: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    import torchvision

    from training.features import FeatureWrapper, feature_model

    repo = tmp_path / "repo"
    shutil.copytree(angle_repo / "angle_locator", repo / "angle_locator")
    weights = tmp_path / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    res = runner.invoke(
        app,
        [
            "export",
            "backbone",
            "--arch",
            "resnet18",
            "--weights",
            str(weights),
            "--input-size",
            "64",
            "--repo",
            str(repo),
        ],
    )
    assert res.exit_code == 0, res.output
    assert available_backbones(repo) == ["angle_locator", "features_resnet18"]
    manifest = json.loads((repo / "features_resnet18" / "MANIFEST.json").read_text())
    assert manifest["features"]["dim"] == 512 and manifest["parity_max_abs"] < 1e-4
    features = backbone_for(repo, "features_resnet18")
    x = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = FeatureWrapper(feature_model("resnet18", weights))(torch.from_numpy(x[:, None])).numpy()
    np.testing.assert_allclose(features(list(x)), ref, rtol=1e-3, atol=1e-4)
    out = tmp_path / "rep"
    args = ["report", "--real", str(score_folders["real"]), "--synthetic", str(score_folders["synthetic"])]
    res = runner.invoke(
        app,
        [
            *args,
            "-o",
            str(out),
            "--repo",
            str(repo),
            "--backbone",
            "features_resnet18",
            "--metrics",
            "fid,kid",
        ],
    )
    assert res.exit_code == 0, res.output  # no angle model in this repo: fidelity is skipped, not fatal
    assert json.loads((out / "report.json").read_text())["feature_backbone"] == "features_resnet18"
    res = runner.invoke(app, ["export", "backbone", "--arch", "resnet18", "--repo", str(repo)])
    assert res.exit_code == 2 and "--weights" in res.output


def test_experiment_augment_runs_resumes_and_tabulates(angle_repo: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "aug"
    args = [
        "experiment", "augment", "-o", str(out), "--real", "6", "--synthetic", "4", "--test", "4",
        "--backbones", "squeezenet1_1", "--seeds", "0,1", "--steps", "2", "--batch-size", "2",
        "--samplers", "lcm-4,phantom-views",
        "--repo", str(angle_repo),
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["training"]) for r in rows) == [
        (0, "real"), (0, "real+lcm-4"), (0, "real+phantom-views"),
        (1, "real"), (1, "real+lcm-4"), (1, "real+phantom-views"),
    ]  # fmt: skip
    assert all(r["train_images"] == (6 if r["training"] == "real" else 6 + 4) for r in rows)
    summary = json.loads((out / "augment.json").read_text())
    entry, control = summary["table"]
    assert control["sampler"] == "phantom-views"
    base = [r["mape"] for r in rows if r["training"] == "real"]
    assert entry["mape"]["without"]["mean"] == pytest.approx(np.mean(base))
    assert entry["mape"]["improvement"] == pytest.approx(1 - entry["mape"]["with"]["mean"] / np.mean(base))
    assert (out / "augment.png").stat().st_size > 0 and "| lcm-4 | squeezenet1_1 |" in (
        out / "augment.md"
    ).read_text()
    # a rerun trains nothing new
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and len((out / "runs.jsonl").read_text().splitlines()) == 6
    changed = runner.invoke(app, [*args, "--steps", "3"])  # other numbers must not mix with these
    assert changed.exit_code == 2 and "steps" in changed.output
    bad = runner.invoke(app, [*args[:3], str(tmp_path / "b"), "--samplers", "euler-3"])
    assert bad.exit_code == 2 and "euler-3" in bad.output
