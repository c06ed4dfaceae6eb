"""The pieces every benchmark and the reliability harness share (bench/common.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import PeakRss, fmt, markdown_table


def test_cells_and_tables():
    assert fmt(float("nan")) == "–" and fmt(None) == "–" and fmt(True) == "yes"
    assert fmt(0.123456) == "0.123" and fmt(12345.6) == "12346" and fmt(7) == "7"
    table = markdown_table(["a", "b"], [[1, 2.5], ["x", float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2.5 |", "| x | – |"]


def test_peak_rss_sees_a_process_grow_and_counts_its_children():
    # a parent that starts a child which holds 200 MB: the peak is the family's, not the parent's alone
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', "
        "'import time; b = bytearray(200 * 2**20); b[::4096] = bytes(len(b[::4096])); time.sleep(3)']); "
        "c.wait()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        with PeakRss({"family": proc.pid}, every_s=0.05) as rss:
            deadline = time.monotonic() + 20
            while rss.peak["family"] < 200 * 2**20 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert rss.peak["family"] >= 200 * 2**20
        assert rss.mb()["family"]["peak_mb"] >= 200
        assert rss.first["family"] <= rss.peak["family"] and rss.samples["family"]
    finally:
        proc.kill()
        proc.wait()
