"""The load test's fast subset (bench.reliability.load, quick): 8 clients for 10 s through a real gateway
and model server on 127.0.0.1, with limits low enough that they are overloaded — no error but
RESOURCE_EXHAUSTED with RetryInfo, the refusal path really taken and honoured, valid manifests, bounded
memory, healthy servers at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reliability import load


@pytest.mark.reliability
def test_quick_load_run_passes_its_checks(tmp_path: Path) -> None:
    section = load.run(tmp_path, quick=True)
    failures = "\n".join(f"{c.name}: {c.detail}" for c in section.failures())
    assert section.passed, f"load test checks failed:\n{failures}\n\n{section.table}"

    rpcs = section.results["rpcs"]
    # the overload was real: the gateway refused with RetryInfo, and the clients retried after it
    refused = sum(r["resource_exhausted_retryinfo"] for r in rpcs.values())
    assert refused > 0, section.table
    assert any("server busy" in reason for r in rpcs.values() for reason in r["refusals"]), section.table
    assert all(r["resource_exhausted_without_retryinfo"] == 0 for r in rpcs.values())
    # every kind of work got through despite it
    for kind in ("PredictAngle", "Generate", "CreateDatasetJob", load.JOB):
        assert rpcs[kind]["ok"] > 0, f"no {kind} succeeded\n{section.table}"
    assert rpcs["Generate"]["events"] >= rpcs["Generate"]["ok"] * 2  # progress events and the image
    assert section.results["jobs"]["manifests_verified"] >= 1

    written = json.loads((tmp_path / "load.json").read_text())
    assert written["checks"] == [c.__dict__ for c in section.checks]
    assert (tmp_path / "load.md").read_text().startswith("### Load test")
