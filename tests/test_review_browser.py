"""The review app in a real browser: Debian's Chromium, headless, driven by Playwright, against the app
on 127.0.0.1 (which calls a real gateway and real model services). A keypoint is dragged and the
correction is checked in the dataset's manifest; a three-image reader study is run end to end.
Screenshots of both pages are saved under ``out/test-artefacts/``."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_support import CHROMIUM, CHROMIUM_ARGS, Stack, start_stack, wait_true

from hipgen.anatomy import norberg_angle
from hipgen.data.datasets import iter_dataset
from hipgen.data.manifest import read_manifest, verify_manifest
from hipgen.review.display import png_chunk_types
from services.review.datasets import CORRECTIONS_LOG, DECISIONS, item_key

NO_CHROMIUM = (
    "Chromium is not installed (`make test` installs Debian's chromium package; without it, or without "
    "root to install it, the browser tests cannot run)"
)
ARTEFACTS = Path(os.environ.get("HIPGEN_TEST_ARTEFACTS", "out/test-artefacts"))
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("review-browser"), count=6, real=4)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # CI sets HIPGEN_REQUIRE_BROWSER=1: there a missing browser is a failure, not a quiet skip
        (pytest.fail if os.environ.get("HIPGEN_REQUIRE_BROWSER") == "1" else pytest.skip)(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def sign_in(browser: object, link: str):  # -> playwright Page
    page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[attr-defined]
    page.goto(link)
    page.click("#accept-invite")
    page.wait_for_load_state("networkidle")
    return page


def record_of(root: Path, key: str):
    return next(
        r
        for e in read_manifest(root).files
        for r in ([e.record] if e.record else e.samples)
        if item_key(r.file_name) == key
    )


def test_dragging_a_rim_point_updates_the_angle_live_and_the_correction_lands_in_the_manifest(
    browser: object, stack: Stack
) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page = sign_in(browser, stack.admin_link("Dr Reviewer"))
    page.click(f'a[href="/review/{stack.job_id}"]')
    page.wait_for_selector("#items li.current")
    wait_true(page, "document.getElementById('radiograph').getBoundingClientRect().width > 100")
    key = page.get_attribute("#items li.current", "data-key")
    before = record_of(stack.job_dir, key)
    shown_before = page.inner_text("#na-left")
    assert shown_before == f"{before.na_left:.1f}°"

    box = page.locator("#pt-left_rim").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y - 25, steps=10)
    page.mouse.up()
    shown_after = page.inner_text("#na-left")
    assert shown_after != shown_before  # the angle followed the drag, before anything was saved
    assert page.is_enabled("#correct") and page.inner_text("#na-right") == f"{before.na_right:.1f}°"
    kp = page.evaluate("state.kp")
    assert kp["left_rim"][0] > before.left_rim_x and kp["left_rim"][1] < before.left_rim_y
    live = norberg_angle(tuple(kp["left_head"]), tuple(kp["right_head"]), tuple(kp["left_rim"]))
    assert shown_after == f"{live:.1f}°"  # the browser's formula is hipgen's
    page.screenshot(path=str(ARTEFACTS / "review-label.png"))

    page.keyboard.press("c")
    page.wait_for_selector("#status-line.ok")
    after = record_of(stack.job_dir, key)
    assert (after.left_rim_x, after.left_rim_y) == pytest.approx(tuple(kp["left_rim"]), abs=1e-9)
    assert after.na_left == pytest.approx(live, abs=1e-9) and f"{after.na_left:.1f}°" == shown_after
    assert (after.left_head_x, after.right_rim_x, after.na_right) == (
        before.left_head_x,
        before.right_rim_x,
        before.na_right,
    )
    report = verify_manifest(stack.job_dir)
    assert report.ok, report.problems  # labels, audit trail and manifest agree on disk
    assert any(
        rec.na_left == after.na_left
        for rec, _ in iter_dataset(stack.job_dir)
        if item_key(rec.file_name) == key
    )
    trail = [json.loads(line) for line in (stack.job_dir / CORRECTIONS_LOG).read_text().splitlines()]
    assert trail[-1]["action"] == "correct" and trail[-1]["reviewer"] == "Dr Reviewer"
    assert (
        trail[-1]["previous"]["na_left"] == before.na_left and trail[-1]["record"]["na_left"] == after.na_left
    )

    # the keyboard moves on to the next unreviewed image: accept one, reject the next
    wait_true(page, f"state.item && state.item.key !== {json.dumps(key)}")
    accepted = page.evaluate("state.item.key")
    page.keyboard.press("a")
    wait_true(page, f"state.item && state.item.key !== {json.dumps(accepted)}")
    rejected = page.evaluate("state.item.key")
    page.keyboard.press("r")
    wait_true(page, f"state.item && state.item.key !== {json.dumps(rejected)}")
    decisions = json.loads((stack.job_dir / DECISIONS).read_text())
    assert decisions == {key: "correct", accepted: "accept", rejected: "reject"}
    assert page.inner_text("#progress") == "3 / 6 reviewed"

    # export the reviewed set: the rejected image is left out, the correction goes with it
    with page.expect_download() as dl:
        page.select_option('select[name="format"]', "classfolders")
        page.click("text=Download .zip")
    zpath = ARTEFACTS / "export.zip"
    dl.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    records = {item_key(f["record"]["file_name"]): f["record"] for f in manifest["files"] if f.get("record")}
    assert rejected not in records and len(records) == 5
    assert records[key]["na_left"] == after.na_left
    page.context.close()


def test_a_three_image_reader_study_runs_end_to_end(browser: object, stack: Stack) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    admin = sign_in(browser, stack.admin_link("Study admin"))
    admin.goto(f"{stack.app.url}/studies/new")
    admin.fill('input[name="name"]', "Pilot: real or synthetic?")
    admin.fill('input[name="real"]', "real")
    admin.fill('input[name="synthetic"]', "job")
    admin.fill('input[name="images"]', "3")
    admin.fill('input[name="readers"]', "1")
    admin.click("text=Create study")
    link = admin.input_value("input.copy")
    study_id = admin.get_attribute("text=Done", "href").rsplit("/", 1)[-1]

    reader = sign_in(browser, link)
    assert reader.url.endswith(f"/study/{study_id}")
    seen = []
    for n in range(3):
        wait_true(reader, f"document.getElementById('counter').textContent === 'image {n + 1} of 3'")
        wait_true(reader, "document.getElementById('study-image').naturalWidth > 0")
        src = reader.get_attribute("#study-image", "src")
        assert src.startswith(f"/api/study/{study_id}/image/") and "film" not in src and "0000" not in src
        png = reader.request.get(stack.app.url + src).body()
        assert set(png_chunk_types(png)) == {"IHDR", "IDAT", "IEND"}  # pixels only: no text, EXIF or tags
        # one common square size for all: the smallest side among them (the generated 128 px; real films
        # of 320×256 are cropped and downscaled to it, nothing is upscaled)
        assert reader.evaluate(
            "[document.getElementById('study-image').naturalWidth, "
            "document.getElementById('study-image').naturalHeight]"
        ) == [128, 128]
        assert "film" not in reader.content() and ".png" not in reader.inner_text("body")
        seen.append(src)
        if n == 0:
            reader.screenshot(path=str(ARTEFACTS / "reader-study.png"))
        if n < 2:
            reader.click('button.conf[data-said="real"][data-confidence="4"]')
        else:  # the keyboard path: S then a confidence
            reader.keyboard.press("s")
            reader.keyboard.press("2")
    reader.wait_for_selector("#study-done:not(.hidden)")
    assert len(set(seen)) == 3

    again = browser.new_context().new_page()  # type: ignore[attr-defined]
    again.goto(link)
    again.click("#accept-invite")
    assert "already used" in again.inner_text("body")  # the link worked once

    admin.goto(f"{stack.app.url}/studies/{study_id}")
    rows = admin.locator("#results tbody tr")
    assert rows.count() == 2  # reader 1 and the pooled row
    assert admin.locator("#results tbody tr").first.locator("td").nth(1).inner_text() == "3"
    confusion = [int(admin.locator("#confusion td").nth(i).inner_text()) for i in range(4)]
    assert sum(confusion) == 3 and confusion[1] + confusion[3] == 1  # said synthetic once
    wait_true(admin, "document.querySelector('img.plot').naturalWidth > 0")
    admin.screenshot(path=str(ARTEFACTS / "reader-study-results.png"), full_page=True)
    csv_text = admin.request.get(f"{stack.app.url}/studies/{study_id}/answers.csv").text()
    assert len(csv_text.strip().splitlines()) == 4 and "reader 1" in csv_text
