"""The reliability harness (``make reliability``): a load test, fault injection and fuzzing against real
hipgen processes on 127.0.0.1, each with bounded loops; ``python -m bench.reliability`` runs all three
and writes a summary table. A fast subset of each runs in ``make test`` (tests/test_reliability_*.py).

Each part is a module with ``run(out, *, quick=False, ...) -> Section`` and a ``main`` for its own CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """One assertion of the harness: what was expected, whether it held, and what was seen."""

    name: str
    passed: bool
    detail: str


@dataclass
class Section:
    """One part's outcome: its markdown table, its checks, and the raw results (written as JSON)."""

    title: str
    table: str
    checks: list[Check] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


__all__ = ["Check", "Section"]
