"""What a label review and a reader study cost in clicks, keys and seconds, driven in headless Chromium.

Starts the model services and the gateway on 127.0.0.1, runs a dataset job of ``--review`` images,
serves the review app, then a scripted reviewer goes through every image: a rim point is dragged and the
correction saved (``C``) where the generator missed the requested angle by more than ``--miss`` degrees,
every tenth image is rejected (``R``), the rest accepted (``A``). Then a ``--study``-image reader study
is created through the admin form and answered by one reader, one click per image. Seconds are the
app's own: page loads, image decoding, write-back into the dataset and the browser's work; a person adds
the time spent looking. Screenshots of both pages go to ``--shots`` (the README shows them).

    python bench/review/bench_review.py --review 20 --study 10 --shots docs/review
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the browser settings the tests use

from review_support import CHROMIUM, CHROMIUM_ARGS, wait_true  # noqa: E402


class Counter:
    def __init__(self) -> None:
        self.clicks = self.keys = self.drags = 0


def start(tmp: Path, count: int):
    from hipgen.client import HipgenClient
    from hipgen.data.images import encode_png
    from hipgen.phantom import PhantomSpec, render_phantom
    from hipgen.settings import Settings
    from services.gateway.server import build_gateway
    from services.review.app import build_app
    from services.review.server import invite_link, serve_in_thread
    from services.server import build_server

    services = ["hipgen.v1.AngleService", "hipgen.v1.GenerateService", "hipgen.v1.ScoreService"]
    server, port = build_server(Settings(port=0, metrics_port=0), services=services)
    server.start()
    addr = f"127.0.0.1:{port}"
    gw = build_gateway(
        Settings(
            port=0,
            metrics_port=0,
            angle_address=addr,
            generate_address=addr,
            score_address=addr,
            dataset_db_url=f"sqlite:///{tmp}/jobs.db",
            dataset_output_root=tmp,
        )
    )
    gw.start()
    gateway = f"127.0.0.1:{gw.port}"
    with HipgenClient(gateway) as client:
        job = client.create_dataset_job(
            output_uri=f"file://{tmp}/job",
            count=count,
            na_range=(75.0, 120.0),
            seed=5,
            sampler="lcm",
            display_name="bench review",
        )
        final = client.wait_dataset_job(job.job_id, timeout_s=600)
        assert final.state == "SUCCEEDED", final.error_message
    real = tmp / "real"
    real.mkdir()
    for i in range(count):
        spec = PhantomSpec(width=640, height=512)
        (real / f"film-{i:03d}.png").write_bytes(encode_png(render_phantom(spec, seed=500 + i).pixels))
    settings = Settings(
        review_db_url=f"sqlite:///{tmp}/review.db",
        review_data_root=tmp,
        review_gateway_address=gateway,
        review_rate_limit_rps=500.0,
        review_rate_limit_burst=1000,
    )
    app = serve_in_thread(build_app(settings))
    return server, gw, app, job.job_id, lambda: invite_link(settings, "admin", "bench admin", app.url)


def review(page, url: str, job_id: str, n: int, miss: float, shots: Path | None) -> dict:
    c = Counter()
    t0 = time.perf_counter()
    page.goto(f"{url}/review/{job_id}")
    wait_true(page, "state.item !== null && document.getElementById('radiograph').getBBox().width > 0")
    first_shot = True
    actions = {"accept": 0, "correct": 0, "reject": 0}
    for i in range(n):
        key = page.evaluate("state.item.key")
        delta = page.evaluate("state.item.delta_deg") or 0.0
        if i % 10 == 9:
            page.keyboard.press("r")
            c.keys += 1
            actions["reject"] += 1
        elif delta > miss:
            box = page.locator("#pt-left_rim").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 12, y - 10, steps=5)
            page.mouse.up()
            c.drags += 1
            if first_shot and shots is not None:
                page.screenshot(path=str(shots / "review-label.png"))
                first_shot = False
            page.keyboard.press("c")
            c.keys += 1
            actions["correct"] += 1
        else:
            page.keyboard.press("a")
            c.keys += 1
            actions["accept"] += 1
        if i < n - 1:
            wait_true(page, f"state.item && state.item.key !== {json.dumps(key)} && !state.busy")
        else:
            wait_true(
                page,
                "document.getElementById('progress').textContent.startsWith(" + json.dumps(f"{n} /") + ")",
            )
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "clicks": c.clicks, "keys": c.keys, "drags": c.drags, **actions}


def study(browser, page, url: str, n: int, shots: Path | None) -> dict:
    c = Counter()
    t0 = time.perf_counter()
    page.goto(f"{url}/studies/new")
    for name, value in (("name", "Bench study"), ("real", "real"), ("synthetic", "job"), ("images", str(n))):
        page.fill(f'input[name="{name}"]', value)
    page.fill('input[name="readers"]', "1")
    page.click("text=Create study")
    c.clicks += 1
    link = page.input_value("input.copy")
    study_id = page.get_attribute("text=Done", "href").rsplit("/", 1)[-1]
    setup_s = time.perf_counter() - t0
    reader = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    t1 = time.perf_counter()
    reader.goto(link)
    reader.click("#accept-invite")
    c.clicks += 1
    reader.wait_for_url(f"**/study/{study_id}")
    for i in range(n):
        wait_true(reader, f"document.getElementById('counter').textContent === 'image {i + 1} of {n}'")
        wait_true(
            reader,
            "document.getElementById('study-image').complete"
            " && document.getElementById('study-image').naturalWidth > 0",
        )
        if i == 0 and shots is not None:
            reader.screenshot(path=str(shots / "reader-study.png"))
        said = "real" if i % 2 else "synthetic"
        reader.click(f'button.conf[data-said="{said}"][data-confidence="{1 + i % 5}"]')
        c.clicks += 1
    wait_true(reader, "!document.getElementById('study-done').classList.contains('hidden')")
    reader_s = time.perf_counter() - t1
    page.goto(f"{url}/studies/{study_id}")
    wait_true(page, "document.querySelector('img.plot').naturalWidth > 0")
    if shots is not None:
        page.screenshot(path=str(shots / "reader-study-results.png"), full_page=True)
    return {
        "images": n,
        "setup_seconds": setup_s,
        "reader_seconds": reader_s,
        "reader_clicks": n + 1,
        "clicks": c.clicks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--review", type=int, default=20, help="images in the reviewed dataset job")
    parser.add_argument("--study", type=int, default=10, help="images in the reader study")
    parser.add_argument(
        "--miss", type=float, default=15.0, help="correct images missed by more than this (°)"
    )
    parser.add_argument("--shots", type=Path, default=None, help="save screenshots here")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        print(f"no Chromium at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="hipgen-bench-review-"))
    server, gw, app, job_id, admin_link = start(tmp, max(args.review, args.study))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            page.goto(admin_link())
            page.click("#accept-invite")
            r = review(page, app.url, job_id, args.review, args.miss, args.shots)
            s = study(browser, page, app.url, args.study, args.shots)
            browser.close()
    finally:
        app.stop()
        gw.stop(None)
        server.stop(None).wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"review": r, "study": s}, indent=1))
    print(
        f"review of {r['images']} images: {r['seconds']:.1f} s ({r['seconds'] / r['images']:.2f} s/image), "
        f"{r['keys']} key presses + {r['drags']} drags, 0 clicks "
        f"({r['accept']} accepted, {r['correct']} corrected, {r['reject']} rejected)"
    )
    print(
        f"reader study of {s['images']} images: set up in {s['setup_seconds']:.1f} s (1 form); one reader "
        f"answered in {s['reader_seconds']:.1f} s with {s['reader_clicks']} clicks "
        "(1 to sign in + 1 per image)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
