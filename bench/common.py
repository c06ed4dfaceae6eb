"""What every benchmark and the reliability harness share: peak-memory sampling of processes, markdown
tables, JSON results, and a cluster of real hipgen processes on 127.0.0.1.

Benchmarks print ratios measured side by side in one run (these machines are shared and noisy) and
never assert on time; the reliability harness asserts on behaviour (status codes, manifests, RSS bounds).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


class PeakRss:
    """Peak resident memory of some processes (children included), sampled every ``every_s`` in a
    thread; ``first`` is each one's first sample, ``samples`` the whole series (for flatness checks)."""

    def __init__(self, pids: Mapping[str, int], every_s: float = 0.2) -> None:
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.first: dict[str, int] = {}
        self.samples: dict[str, list[int]] = {k: [] for k in pids}
        self.every_s = every_s
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss(proc: psutil.Process) -> int:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for k, p in self.procs.items():
                try:
                    rss = self.rss(p)
                except psutil.Error:
                    continue
                self.first.setdefault(k, rss)
                self.peak[k] = max(self.peak[k], rss)
                self.samples[k].append(rss)

    def mb(self) -> dict[str, dict[str, int]]:
        """``{name: {"start_mb", "peak_mb"}}``."""
        return {
            k: {"start_mb": round(self.first.get(k, 0) / 2**20), "peak_mb": round(self.peak[k] / 2**20)}
            for k in self.procs
        }

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, NaN as ``–``."""
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "–"}[v]
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out: Path, name: str, results: Any, table: str) -> Path:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` (the table) and print the table; return the
    JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    (out / f"{name}.md").write_text(table + "\n")
    print(table, flush=True)
    print(f"\nJSON: {path}", flush=True)
    return path


@dataclass
class Proc:
    """One hipgen server process started by :func:`start`: its Popen, port and log lines."""

    name: str
    popen: subprocess.Popen[str]
    port: int
    args: tuple[str, ...]
    env: dict[str, str]
    ready: str
    lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill9(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a node loss would: no graceful shutdown."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(30)

    def restart(self, *, same_port: bool = True) -> Proc:
        """A new process with the same arguments and environment, on the same port unless asked not to
        (clients reconnect to the address they had)."""
        return start(self.name, self.args, self.env, self.ready, port=self.port if same_port else 0)


def start(name: str, args: Sequence[str], env: Mapping[str, str], ready: str, *, port: int = 0) -> Proc:
    """Start ``python -m <args>`` on 127.0.0.1:``port`` (0: a free one) and wait until it logs ``ready``
    (:func:`hipgen.demo.start_server_process`); ``env`` is added to this process's environment, with
    INFO logs (the ready line is INFO) and no metrics port unless it says otherwise."""
    from hipgen.demo import start_server_process

    env = {**os.environ, "HIPGEN_LOG_LEVEL": "INFO", "HIPGEN_METRICS_PORT": "0", **env}
    popen, bound, lines = start_server_process(env, tuple(args), ready, port=port)
    return Proc(name, popen, bound, tuple(args), dict(env), ready, lines)


__all__ = ["REPO", "PeakRss", "Proc", "fmt", "markdown_table", "start", "write_results"]
