"""`make run`'s demo as a user runs it: renders a set, starts the real server on 127.0.0.1, probes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hipgen.data.manifest import verify_manifest


def test_demo_renders_starts_server_and_reports(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPGEN_")}
    env["HIPGEN_OUT_DIR"] = str(tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "hipgen.demo", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo OK" in done.stdout
    for service in ("AngleService", "GenerateService", "ScoreService", "DatasetService"):
        assert f"hipgen.v1.{service}" in done.stdout
    data = tmp_path / "out" / "phantoms"
    assert len(list(data.glob("*.png"))) == 24 and verify_manifest(data).ok
    assert (tmp_path / "out" / "phantom_grid.png").stat().st_size > 10_000
    from PIL import Image

    generated = sorted((tmp_path / "out" / "generated").glob("*.png"))
    assert len(generated) == 6 and "GenerateService (LCM-4" in done.stdout
    assert all(Image.open(p).text["hipgen:synthetic"] == "true" for p in generated)
    assert "ScoreService: 6 generated vs 24 phantom views" in done.stdout
    assert "backbone angle_locator" in done.stdout
    assert "angle MAE (left)" in done.stdout
    # the dataset job through the gateway: exactly 32 images with sha256, scored against the views
    dataset = tmp_path / "out" / "dataset"
    assert "DatasetService via the gateway: a 32-image dataset job" in done.stdout
    assert verify_manifest(dataset).ok and len(list(dataset.glob("*.png"))) == 32
    assert (dataset / "score" / "report.json").is_file()
    assert "sha256 check: OK" in done.stdout and "fidelity (measured vs requested)" in done.stdout
    # the review app, started on the gateway: its URL and a one-time admin link that signs in
    assert "review app: http://127.0.0.1:" in done.stdout
    assert re.search(r"sign in as admin \(one-time link\): http://127\.0\.0\.1:\d+/invite/\S+", done.stdout)
    assert (tmp_path / "out" / "demo-review.db").is_file()
