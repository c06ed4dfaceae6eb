"""The latent (SD-like) path on tiny configs: `hipgen train vae` → `hipgen train diffusion --vae` →
`hipgen export generator` (UNet + decoder entries) → the torch-free Generator decodes what it samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from hipgen.cli import app  # noqa: E402
from hipgen.generate.conditions import NaRequest  # noqa: E402
from hipgen.generate.generator import Generator, choose_sampler  # noqa: E402
from hipgen.inference.backend import OrtBackend  # noqa: E402

runner = CliRunner()


def test_latent_generator_end_to_end(tmp_path: Path) -> None:
    vae_run, run, repo = tmp_path / "vae", tmp_path / "ldm", tmp_path / "repo"
    common = ["--count", "6", "--size", "32", "--tiny", "--batch-size", "2", "--workers", "1"]
    res = runner.invoke(app, ["train", "vae", "-o", str(vae_run), *common, "--steps", "3"])
    assert res.exit_code == 0, res.output
    meta = json.loads((vae_run / "vae.json").read_text())
    assert meta["scaling_factor"] > 0 and (vae_run / "reconstructions.png").is_file()
    res = runner.invoke(
        app,
        [
            "train",
            "diffusion",
            "-o",
            str(run),
            *common,
            "--steps",
            "2",
            "--checkpoint-every",
            "2",
            "--vae",
            str(vae_run),
        ],
    )
    assert res.exit_code == 0, res.output
    model = json.loads((run / "model.json").read_text())["config"]
    assert (model["channels"], model["size"]) == (4, 16)  # 32 px views, ÷2 tiny VAE, 4 latent channels
    res = runner.invoke(app, ["export", "generator", str(run), "--repo", str(repo), "--name", "gen_latent"])
    assert res.exit_code == 0, res.output
    spec = json.loads((repo / "gen_latent" / "MANIFEST.json").read_text())["generator"]
    assert spec["size"] == 32 and spec["latent"] == {"channels": 4, "size": 16, "decoder": "gen_latent_vae"}
    assert (repo / "gen_latent_vae" / "1" / "model.onnx").is_file()
    assert "dims: [ 4, 16, 16 ]" in (repo / "gen_latent_vae" / "config.pbtxt").read_text()

    gen = Generator(OrtBackend(repo), "gen_latent")
    choice = choose_sampler(gen.spec, "ddim", 3, None)
    images = gen.generate(gen.plan([NaRequest(90, 110), NaRequest(120, 80)], [1, 2], choice))
    assert images.shape == (2, 32, 32) and np.isfinite(images).all()
    again = gen.generate(gen.plan([NaRequest(120, 80)], [2], choice))
    np.testing.assert_array_equal(images[1], again[0])
    res = runner.invoke(
        app, ["train", "diffusion", "-o", str(tmp_path / "x"), "--vae", str(tmp_path / "nope")]
    )
    assert res.exit_code == 2 and "vae.json" in res.output
