"""``python -m bench.reliability``: the summary names every failed check, exits 1 on any failure, and a
part that raises is a failed check, not a lost run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reliability import Check, Section
from bench.reliability import __main__ as summary


def test_the_summary_lists_failed_checks_and_counts_passes():
    sections = {
        "load": Section(
            "load test", "", [Check("no errors", True, "0"), Check("RSS bounded", False, "+900 MB")]
        ),
        "fuzz": Section("fuzzing", "", [Check("no crash", True, "10000 cases")]),
    }
    table = summary.summary_table(sections, {"load": 120.4, "fuzz": 300.0})
    assert "| load | load test | 1/2 | FAIL | 120 s |" in table
    assert "| fuzz | fuzzing | 1/1 | PASS | 300 s |" in table
    assert "| load | RSS bounded | +900 MB |" in table
    assert "no crash" not in table  # passed checks are counted, not listed


def test_a_part_that_raises_fails_the_run_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ran = []

    def broken(out: Path) -> Section:
        ran.append("load")
        raise RuntimeError("port in use")

    def fine(out: Path) -> Section:
        ran.append("fuzz")
        return Section("fuzzing", "", [Check("no crash", True, "3 cases")])

    monkeypatch.setattr(summary, "_runners", lambda args: {"load": broken, "faults": fine, "fuzz": fine})
    rc = summary.main(["--out", str(tmp_path), "--only", "load,fuzz"])
    assert rc == 1 and ran == ["load", "fuzz"]
    got = json.loads((tmp_path / "summary.json").read_text())
    assert got["load"]["passed"] is False and "port in use" in got["load"]["checks"][0]["detail"]
    assert got["fuzz"]["passed"] is True
    assert "FAIL" in (tmp_path / "summary.md").read_text()


def test_an_unknown_part_is_refused(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        summary.main(["--only", "load,chaos"])
    assert exc.value.code == 2 and "chaos" in capsys.readouterr().err
