"""``make reliability``: the load test, fault injection and fuzzing in one run, then a summary table.

    python -m bench.reliability [--out out/reliability] [--duration 120] [--clients 50] [--cases 10000]
                                [--only load,faults,fuzz] [--quick]

Each part writes its own ``<part>.json`` / ``<part>.md`` under ``--out``; this writes ``summary.md`` and
``summary.json`` (every check, passed or not) and exits 1 when any check failed. A part that raises is
reported as a failed check with its error, and the other parts still run: one broken part must not hide
what the others found.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import markdown_table
from bench.reliability import Check, Section

PARTS = ("load", "faults", "fuzz")


def _runners(args: argparse.Namespace) -> dict[str, Callable[[Path], Section]]:
    def load(out: Path) -> Section:
        from bench.reliability import load as part

        return part.run(out, quick=args.quick, duration_s=args.duration, clients=args.clients)

    def faults(out: Path) -> Section:
        from bench.reliability import faults as part

        return part.run(out, quick=args.quick)

    def fuzz(out: Path) -> Section:
        from bench.reliability import fuzz as part

        return part.run(out, quick=args.quick, cases=args.cases, seed=args.seed)

    return {"load": load, "faults": faults, "fuzz": fuzz}


def summary_table(sections: dict[str, Section], seconds: dict[str, float]) -> str:
    """One row per part (checks passed / total, time), then one row per failed check."""
    rows = [
        [
            name,
            s.title,
            f"{sum(c.passed for c in s.checks)}/{len(s.checks)}",
            "PASS" if s.passed else "FAIL",
            f"{seconds[name]:.0f} s",
        ]
        for name, s in sections.items()
    ]
    table = markdown_table(["part", "what", "checks passed", "verdict", "time"], rows)
    failed = [(name, c) for name, s in sections.items() for c in s.failures()]
    if failed:
        table += "\n\nFailed checks:\n\n" + markdown_table(
            ["part", "check", "seen"], [[name, c.name, c.detail] for name, c in failed]
        )
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/reliability"))
    ap.add_argument("--duration", type=float, default=120.0, help="load test seconds (300 for the long run)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent load-test clients")
    ap.add_argument("--cases", type=int, default=10_000, help="fuzz cases in all")
    ap.add_argument("--seed", type=int, default=0, help="fuzzing seed")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    ap.add_argument("--quick", action="store_true", help="the fast subset make test runs")
    args = ap.parse_args(argv)
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")

    runners = _runners(args)
    sections: dict[str, Section] = {}
    seconds: dict[str, float] = {}
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        t0 = time.perf_counter()
        try:
            sections[name] = runners[name](args.out)
        except Exception as err:  # noqa: BLE001 - reported as a failed check; the other parts still run
            traceback.print_exc()
            sections[name] = Section(name, "", [Check(f"{name} ran to the end", False, repr(err))])
        seconds[name] = time.perf_counter() - t0

    table = summary_table(sections, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text("# Reliability summary\n\n" + table + "\n")
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                name: {
                    "title": s.title,
                    "passed": s.passed,
                    "seconds": round(seconds[name], 1),
                    "checks": [c.__dict__ for c in s.checks],
                }
                for name, s in sections.items()
            },
            indent=1,
        )
    )
    print("\n# Reliability summary\n\n" + table + f"\n\nwritten to {args.out / 'summary.md'}", flush=True)
    return 0 if all(s.passed for s in sections.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
