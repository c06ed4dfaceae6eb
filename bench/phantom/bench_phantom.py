"""Phantom rendering throughput on one core: images/s at 256² and 512² (target ≥ 20/s at 512²).

Run: ``make bench`` (or ``python bench/phantom/bench_phantom.py --count 40``). Prints a table with
each size's rate and its ratio to the 512² target, measured side by side in one run; the rates are
for a whole-pelvis default spec and for the domain-randomised ``uniform`` distribution.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hipgen.phantom import PhantomSpec, render_phantom, sample_spec  # noqa: E402

TARGET_512 = 20.0


def rate(specs: list[PhantomSpec]) -> float:
    render_phantom(specs[0], seed=0)  # warm-up
    t0 = time.perf_counter()
    for i, s in enumerate(specs):
        render_phantom(s, seed=i)
    return len(specs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40, help="images per row of the table")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # one core, as the target says
    rows = []
    for size in (256, 512):
        fixed = [PhantomSpec(width=size, height=size)] * args.count
        rng = np.random.default_rng(0)
        # square images only, so that both rows render the same number of pixels
        randomised = [
            PhantomSpec.from_dict(
                {**sample_spec("uniform", rng, image_size=size).to_dict(), "width": size, "height": size}
            )
            for _ in range(args.count)
        ]
        rows.append((f"{size}²", "default", rate(fixed)))
        rows.append((f"{size}²", "uniform", rate(randomised)))
    print(f"{'size':>6} {'spec':>8} {'images/s':>9} {'÷ target(20/s)':>15}")
    for size, kind, r in rows:
        print(f"{size:>6} {kind:>8} {r:9.1f} {r / TARGET_512:15.2f}")
    r256 = rows[0][2]
    print(f"512² vs 256² (default spec): {rows[2][2] / r256:.2f}× the rate")


if __name__ == "__main__":
    main()
