"""The review app over HTTP: security headers, CSRF, roles, one-time links, input checks, the review API,
model confidences through the gateway, exports, a blind reader study and rate limits, all against the
app served by uvicorn on 127.0.0.1 with a real gateway and real model services behind it."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image
from review_support import Stack, csrf_of, start_stack

from hipgen.anatomy import norberg_angle
from hipgen.data.datasets import FORMATS
from hipgen.data.dicom import synthetic_dicom_bytes
from hipgen.data.images import encode_png
from hipgen.data.manifest import MANIFEST_NAME, read_manifest, verify_manifest
from hipgen.phantom import PhantomSpec, render_phantom
from hipgen.review.display import png_chunk_types
from hipgen.settings import Settings
from services.review.app import build_app
from services.review.datasets import CORRECTIONS_LOG, DECISIONS
from services.review.server import RunningApp, invite_link, serve_in_thread
from services.review.store import ReviewStore, token_digest

ADMIN_NAME = "Test Admin"
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-4471-0815"
PNG_SECRET = "hipgen:generator=ddpm-secret"
CSP_PARTS = ("script-src 'self'", "frame-ancestors 'none'", "default-src 'none'")


# --- fixtures and helpers -----------------------------------------------------------------------------
_LOOPBACK_HOSTS = itertools.count(2)


def client_for(stack: Stack) -> httpx.Client:
    """An HTTP client on its own loopback address (127.0.0.N). The app limits requests per client
    address, invitation links very tightly (ten, then one per five seconds); each person in these tests
    comes from their own address, as people on their own machines do, so that the tests' many sign-ins
    do not share one bucket."""
    host = f"127.0.0.{next(_LOOPBACK_HOSTS)}"
    return httpx.Client(base_url=stack.app.url, timeout=30, transport=httpx.HTTPTransport(local_address=host))


def signed_in(stack: Stack, link: str) -> httpx.Client:
    """A client that followed an invitation link (GET the page, POST its form with the token)."""
    client = client_for(stack)
    page = client.get(link)
    assert page.status_code == 200, page.text
    r = client.post(link, data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    return client


def _identified_dicom(seed: int) -> bytes:
    """A DICOM film with a patient's name and ID, the way a real clinic export carries them."""
    pixels = render_phantom(PhantomSpec(width=300, height=240), seed=seed).pixels
    raw = synthetic_dicom_bytes(
        pixels, record=None, generator="test", model_version="0", seed=1, pixel_spacing_mm=(0.1, 0.1)
    )
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("review-app"), count=6, real=4)
    # a "real" set that carries identifying metadata: a DICOM with a patient, a PNG with text chunks
    meta = s.tmp / "meta-real"
    meta.mkdir()
    (meta / "patient.dcm").write_bytes(_identified_dicom(200))
    pixels = render_phantom(PhantomSpec(width=280, height=330), seed=201).pixels
    (meta / "labelled.png").write_bytes(
        encode_png(pixels, text={"hipgen:generator": PNG_SECRET, "patient": PATIENT_NAME})
    )
    tiny = s.tmp / "tiny"
    tiny.mkdir()
    (tiny / "only.png").write_bytes(encode_png(render_phantom(PhantomSpec(), seed=300).pixels))
    yield s
    s.close()


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    c = signed_in(stack, stack.admin_link(ADMIN_NAME))
    yield c
    c.close()


@pytest.fixture(scope="module")
def reviewer(stack: Stack) -> Iterator[httpx.Client]:
    c = signed_in(stack, stack.reviewer_link("Test Reviewer"))
    yield c
    c.close()


def csrf(client: httpx.Client) -> str:
    """The session's CSRF token, read from a page as the app's scripts read it."""
    r = client.get("/")
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


def items(stack: Stack, client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/jobs/{stack.job_id}/items", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def decide(
    stack: Stack, client: httpx.Client, key: str, body: Any, token: str | None = "auto"
) -> httpx.Response:
    headers = {}
    if token == "auto":
        token = csrf(client)
    if token is not None:
        headers["X-CSRF-Token"] = token
    return client.post(f"/api/jobs/{stack.job_id}/items/{key}", json=body, headers=headers)


def make_study(
    client: httpx.Client, *, real: str = "real", synthetic: str = "job", images: str = "2", readers: str = "1"
) -> httpx.Response:
    form = {
        "csrf_token": csrf(client),
        "name": "metadata check",
        "real": real,
        "synthetic": synthetic,
        "images": images,
        "seed": "5",
        "readers": readers,
    }
    return client.post("/studies", data=form)


def study_links(resp: httpx.Response) -> tuple[str, list[str]]:
    """The new study's id and its reader links, from the links page."""
    assert resp.status_code == 200, resp.text
    study_id = re.search(r'href="/studies/([0-9a-f]+)"', resp.text)
    assert study_id, resp.text
    return study_id.group(1), re.findall(r'class="copy" readonly value="([^"]+)"', resp.text)


def form_error(resp: httpx.Response) -> str:
    m = re.search(r'<p class="error" id="form-error">([^<]*)</p>', resp.text)
    assert m, f"no form error on the page: {resp.text[:500]}"
    return m.group(1)


def keypoints_of(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "left_head": [record["left_head_x"], record["left_head_y"]],
        "right_head": [record["right_head_x"], record["right_head_y"]],
        "left_rim": [record["left_rim_x"], record["left_rim_y"]],
        "right_rim": [record["right_rim_x"], record["right_rim_y"]],
        "left_radius": record["left_radius"],
        "right_radius": record["right_radius"],
    }


def dataset_state(root: Path) -> tuple[bytes | None, bytes]:
    decisions = root / DECISIONS
    return (decisions.read_bytes() if decisions.exists() else None), (root / MANIFEST_NAME).read_bytes()


def image_count(manifest: dict[str, Any]) -> int:
    return sum(1 if f.get("record") else len(f.get("samples") or []) for f in manifest["files"])


# --- 1. security headers ------------------------------------------------------------------------------
def test_security_headers_on_html_json_static_and_png(stack: Stack, admin: httpx.Client) -> None:
    key = items(stack, admin)["items"][0]["key"]
    responses = {
        "html": admin.get("/"),
        "json": admin.get(f"/api/jobs/{stack.job_id}/items"),
        "static": admin.get("/static/app.css"),
        "png": admin.get(f"/api/jobs/{stack.job_id}/items/{key}/image.png"),
    }
    types = {"html": "text/html", "json": "application/json", "static": "text/css", "png": "image/png"}
    for kind, r in responses.items():
        assert r.status_code == 200, (kind, r.text[:200])
        assert r.headers["content-type"].startswith(types[kind]), kind
        csp = r.headers.get_list("content-security-policy")
        assert len(csp) == 1, (kind, csp)
        assert all(part in csp[0] for part in CSP_PARTS), (kind, csp)
        assert "unsafe-inline" not in csp[0] and "unsafe-eval" not in csp[0], kind
        assert r.headers["x-content-type-options"] == "nosniff", kind
        assert r.headers["x-frame-options"] == "DENY", kind
        assert r.headers["referrer-policy"] == "no-referrer", kind
        assert r.headers["cache-control"] == "no-store", kind
    assert responses["png"].content.startswith(b"\x89PNG")


# --- 2. CSRF ------------------------------------------------------------------------------------------
def test_decision_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    stack: Stack, admin: httpx.Client, reviewer: httpx.Client
) -> None:
    listing = items(stack, admin)["items"]
    key = listing[-1]["key"]
    before, before_decision = dataset_state(stack.job_dir), listing[-1]["decision"]
    other_session = csrf(reviewer)  # a real token, but of another session
    for token in (None, "", "not-the-token", other_session):
        r = decide(stack, admin, key, {"action": "reject"}, token=token)
        assert r.status_code == 403, (token, r.text)
        assert "CSRF" in r.text
        assert dataset_state(stack.job_dir) == before  # decisions.json and the manifest untouched
    assert next(i for i in items(stack, admin)["items"] if i["key"] == key)["decision"] == before_decision

    r = decide(stack, admin, key, {"action": "accept"})  # the session's token in the header
    assert r.status_code == 200, r.text
    assert json.loads((stack.job_dir / DECISIONS).read_text())[key] == "accept"


def test_form_posts_need_the_csrf_field(stack: Stack) -> None:
    link = stack.reviewer_link("csrf form")
    client = client_for(stack)
    token = csrf_of(client.get(link).text)
    assert client.post(link, data={}).status_code == 403  # no field: refused, the link is not spent
    assert client.post(link, data={"csrf_token": token + "x"}).status_code == 403
    r = client.post(link, data={"csrf_token": token})
    assert r.status_code == 303, r.text  # the link still worked once the token came along
    assert client.get(f"/api/jobs/{stack.job_id}/items").status_code == 200
    client.close()


# --- 3. roles -----------------------------------------------------------------------------------------
def test_without_a_session_api_answers_401_json_and_pages_401_html(stack: Stack) -> None:
    with client_for(stack) as anon:
        r = anon.get(f"/api/jobs/{stack.job_id}/items")
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")
        assert "sign in" in r.json()["error"]
        for path in (f"/review/{stack.job_id}", "/studies/new"):
            r = anon.get(path)
            assert r.status_code == 401, path
            assert r.headers["content-type"].startswith("text/html") and "Error 401" in r.text
        assert anon.get("/").status_code == 200  # the sign-in page itself is public


def test_a_reviewer_cannot_reach_admin_pages(stack: Stack, reviewer: httpx.Client) -> None:
    assert reviewer.get(f"/review/{stack.job_id}").status_code == 200
    r = reviewer.get("/studies/new")
    assert r.status_code == 403 and "admin" in r.text
    r = reviewer.post("/invites", data={"csrf_token": csrf(reviewer), "role": "admin", "name": "me again"})
    assert r.status_code == 403, r.text
    r = reviewer.post("/studies", data={"csrf_token": csrf(reviewer), "real": "real", "synthetic": "job"})
    assert r.status_code == 403


def test_a_reader_sees_only_their_own_study_and_admin_passes_admin_pages(
    stack: Stack, admin: httpx.Client
) -> None:
    own, links = study_links(make_study(admin, images="2", readers="1"))
    other, _ = study_links(make_study(admin, images="2", readers="0"))
    reader = signed_in(stack, links[0])
    try:
        home = reader.get("/")
        assert home.status_code == 303 and home.headers["location"] == f"/study/{own}"
        assert reader.get(f"/study/{own}").status_code == 200
        assert reader.get(f"/review/{stack.job_id}").status_code == 403
        assert reader.get(f"/api/jobs/{stack.job_id}/items").status_code == 403
        assert reader.get(f"/study/{other}").status_code == 403
        r = reader.get(f"/api/study/{other}/next")
        assert r.status_code == 403 and "another study" in r.json()["error"]
        assert reader.get(f"/studies/{own}").status_code == 403  # the results are the admin's
        assert reader.get(f"/studies/{own}/answers.csv").status_code == 403
    finally:
        reader.close()
    assert admin.get("/studies/new").status_code == 200
    assert admin.get(f"/studies/{own}").status_code == 200
    assert admin.get(f"/review/{stack.job_id}").status_code == 200
    r = admin.post("/invites", data={"csrf_token": csrf(admin), "role": "reviewer", "name": "new colleague"})
    assert r.status_code == 200 and "/invite/" in r.text
    assert admin.get(f"/api/study/{own}/next").status_code == 403  # admin does not answer as a reader


# --- 4. one-time links --------------------------------------------------------------------------------
def test_a_link_works_once(stack: Stack) -> None:
    link = stack.reviewer_link("once")
    signed_in(stack, link).close()
    with client_for(stack) as late:
        token = csrf_of(late.get(link).text)
        r = late.post(link, data={"csrf_token": token})
        assert r.status_code == 410 and "already used" in r.text
        assert late.get(f"/api/jobs/{stack.job_id}/items").status_code == 401


def test_an_expired_link_is_refused(stack: Stack) -> None:
    store = ReviewStore(stack.settings.review_db_url)
    try:
        token = store.invite("reviewer", "too late", created_by="test", ttl_s=-1)
    finally:
        store.close()
    with client_for(stack) as late:
        page = late.get(f"/invite/{token}")
        assert page.status_code == 200
        r = late.post(f"/invite/{token}", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 410 and "expired" in r.text


def test_opening_an_invitation_page_does_not_spend_the_link(stack: Stack) -> None:
    link = stack.reviewer_link("prefetched")
    with client_for(stack) as prefetcher:
        for _ in range(3):  # a mail scanner or a browser's link preview
            assert prefetcher.get(link).status_code == 200
        assert prefetcher.get(f"/api/jobs/{stack.job_id}/items").status_code == 401  # not signed in
    signed_in(stack, link).close()  # the person who clicks still gets in


def test_the_database_keeps_only_a_hash_of_each_link(stack: Stack) -> None:
    link = invite_link(stack.settings, "reviewer", "hash check", stack.app.url)
    token = link.rsplit("/", 1)[-1]
    db = stack.tmp / "review.db"
    raw = b"".join(p.read_bytes() for p in (db, db.with_name("review.db-wal")) if p.exists())
    assert token_digest(token).encode() in raw  # the right file was read
    assert token.encode() not in raw


# --- 5. bad input -------------------------------------------------------------------------------------
def test_decisions_with_bad_input_answer_400_naming_the_field(stack: Stack, admin: httpx.Client) -> None:
    first = items(stack, admin)["items"][0]
    key = first["key"]
    record = admin.get(f"/api/jobs/{stack.job_id}/items/{key}").json()["record"]
    good = keypoints_of(record)
    before = dataset_state(stack.job_dir)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"action": "bogus"}, "action"),
        ({"action": "correct", "keypoints": {k: v for k, v in good.items() if k != "left_rim"}}, "left_rim"),
        ({"action": "correct", "keypoints": {**good, "left_rim": [10_000.0, 10.0]}}, "keypoints.left_rim"),
        ({"action": "correct", "keypoints": {**good, "right_rim": [10.0, 10_000.0]}}, "keypoints.right_rim"),
        ({"action": "correct", "keypoints": {**good, "left_head": [-1.0, 10.0]}}, "keypoints.left_head"),
        ({"action": "correct", "keypoints": {**good, "left_radius": 0}}, "keypoints.left_radius"),
        ({"action": "correct", "keypoints": {**good, "right_radius": -4.5}}, "keypoints.right_radius"),
        ({"action": "correct", "keypoints": {**good, "left_head": [True, 10.0]}}, "keypoints.left_head"),
        ({"action": "correct", "keypoints": {**good, "left_radius": True}}, "keypoints.left_radius"),
        ({"action": "correct", "keypoints": "nope"}, "keypoints"),
    ]
    for body, field in cases:
        r = decide(stack, admin, key, body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"], (field, r.json())
    r = admin.post(
        f"/api/jobs/{stack.job_id}/items/{key}",
        content=b"{not json",
        headers={"X-CSRF-Token": csrf(admin), "content-type": "application/json"},
    )
    assert r.status_code == 400 and "body" in r.json()["error"]
    assert dataset_state(stack.job_dir) == before


def test_list_filters_with_bad_values_answer_400(stack: Stack, admin: httpx.Client) -> None:
    for params, field in (
        ({"min_delta": "abc"}, "min_delta"),
        ({"min_delta": "nan"}, "min_delta"),
        ({"max_confidence": "x"}, "max_confidence"),
        ({"status": "nope"}, "status"),
    ):
        r = admin.get(f"/api/jobs/{stack.job_id}/items", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"].startswith(field), r.json()


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"real": "/etc"}, "real"),
        ({"real": "../"}, "real"),
        ({"real": "~nosuchuser-hipgen/films"}, "real"),
        ({"real": "real\x00x"}, "real"),
        ({"real": "no-such-folder"}, "real"),
        ({"synthetic": "/"}, "synthetic"),
        ({"images": "1"}, "images"),
        ({"images": "two"}, "images"),
        ({"synthetic": "tiny", "images": "4"}, "synthetic"),
    ],
)
def test_study_creation_with_bad_input_re_renders_the_form_naming_the_field(
    stack: Stack, admin: httpx.Client, form: dict[str, str], field: str
) -> None:
    r = make_study(admin, **form)
    assert r.status_code == 400, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    error = form_error(r)
    assert field in error, error
    assert 'action="/studies"' in r.text  # the form again, to fix and resend


def test_export_with_an_unknown_format_answers_400(stack: Stack, admin: httpx.Client) -> None:
    r = admin.post(f"/review/{stack.job_id}/export", data={"csrf_token": csrf(admin), "format": "bogus"})
    assert r.status_code == 400 and "format" in r.text


def test_unknown_jobs_and_items_answer_404(stack: Stack, admin: httpx.Client) -> None:
    missing = "0" * 32  # a well-formed job id the gateway has never seen: its NOT_FOUND becomes 404
    r = admin.get(f"/api/jobs/{missing}/items")
    assert r.status_code == 404, r.text
    assert r.json()["error"].startswith("gateway: ") and missing in r.json()["error"]
    assert admin.get(f"/review/{missing}").status_code == 404
    assert admin.get(f"/api/jobs/{missing}/items/000000").status_code == 404
    r = admin.get("/api/jobs/not-a-job/items")  # malformed: the gateway's INVALID_ARGUMENT
    assert r.status_code == 400 and "job_id" in r.json()["error"]
    r = admin.get(f"/api/jobs/{stack.job_id}/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert admin.get(f"/studies/{'f' * 16}").status_code == 404


# --- 6. the review API --------------------------------------------------------------------------------
def test_min_delta_filter_returns_exactly_the_items_above_it(stack: Stack, admin: httpx.Client) -> None:
    everything = items(stack, admin)["items"]
    deltas = sorted(i["delta_deg"] for i in everything)
    assert all(d is not None for d in deltas) and len(set(deltas)) > 2
    threshold = deltas[len(deltas) // 2]
    got = {i["key"] for i in items(stack, admin, min_delta=threshold)["items"]}
    assert got == {i["key"] for i in everything if i["delta_deg"] >= threshold}
    assert 0 < len(got) < len(everything)


def test_status_filters_follow_the_decisions(stack: Stack, admin: httpx.Client) -> None:
    pending = [i["key"] for i in items(stack, admin)["items"] if i["decision"] is None]
    assert pending, "no undecided image left"
    assert decide(stack, admin, pending[0], {"action": "accept", "seconds": 2.5}).status_code == 200
    after = items(stack, admin)
    expected = {i["key"] for i in after["items"] if i["decision"] is None}
    assert pending[0] not in expected
    assert {i["key"] for i in items(stack, admin, status="pending")["items"]} == expected
    accepted = {i["key"] for i in items(stack, admin, status="accept")["items"]}
    assert pending[0] in accepted and accepted == {
        i["key"] for i in after["items"] if i["decision"] == "accept"
    }
    assert after["reviewed"] == after["total"] - len(expected)


def test_a_correction_is_measured_by_the_server_and_written_with_its_audit_trail(
    stack: Stack, admin: httpx.Client
) -> None:
    key = items(stack, admin)["items"][1]["key"]
    before = admin.get(f"/api/jobs/{stack.job_id}/items/{key}").json()["record"]
    kp = keypoints_of(before)
    kp["left_rim"] = [kp["left_rim"][0] + 6.0, kp["left_rim"][1] - 5.0]
    t0 = time.time()
    # the client's own angle is ignored: the server measures the keypoints
    r = decide(stack, admin, key, {"action": "correct", "keypoints": kp, "na_left": 1.0, "seconds": 4})
    assert r.status_code == 200, r.text
    expected = norberg_angle(tuple(kp["left_head"]), tuple(kp["right_head"]), tuple(kp["left_rim"]))
    assert r.json()["record"]["na_left"] == pytest.approx(expected, abs=1e-9)
    assert r.json()["record"]["na_right"] == before["na_right"]
    assert expected != pytest.approx(before["na_left"], abs=1e-3)

    on_disk = next(
        rec
        for e in read_manifest(stack.job_dir).files
        for rec in ([e.record] if e.record else e.samples)
        if Path(rec.file_name).stem == key
    )
    assert on_disk.na_left == pytest.approx(expected, abs=1e-9)
    assert (on_disk.left_rim_x, on_disk.left_rim_y) == pytest.approx(tuple(kp["left_rim"]))
    trail = [json.loads(line) for line in (stack.job_dir / CORRECTIONS_LOG).read_text().splitlines()]
    last = trail[-1]
    assert (last["action"], last["file_name"], last["reviewer"]) == ("correct", key, ADMIN_NAME)
    assert t0 - 1 <= last["at"] <= time.time() + 1 and last["seconds"] == 4
    assert last["previous"]["na_left"] == before["na_left"]
    assert last["record"]["na_left"] == pytest.approx(expected, abs=1e-9)
    report = verify_manifest(stack.job_dir)
    assert report.ok, report.problems
    history = admin.get(f"/api/jobs/{stack.job_id}/items/{key}").json()["history"]
    assert history[-1]["action"] == "correct"


# --- 7. model confidence through the gateway ----------------------------------------------------------
def test_model_confidences_come_through_the_gateway_and_filter_the_list(
    stack: Stack, admin: httpx.Client
) -> None:
    r = admin.post(f"/api/jobs/{stack.job_id}/measure", headers={"X-CSRF-Token": csrf(admin)})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while True:
        listing = items(stack, admin)
        if listing["confidences"] == listing["total"] and not listing["measuring"]:
            break
        assert time.monotonic() < deadline, listing
        time.sleep(0.2)
    confs = {i["key"]: i["confidence"] for i in listing["items"]}
    assert all(isinstance(c, float) and 0.0 <= c <= 1.0 for c in confs.values()), confs
    threshold = sorted(confs.values())[len(confs) // 2]
    got = items(stack, admin, max_confidence=threshold)["items"]
    assert {i["key"] for i in got} == {k for k, c in confs.items() if c <= threshold}
    assert got and all(i["confidence"] <= threshold for i in got)


# --- 8. export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_leaves_out_rejected_images_and_verifies(
    stack: Stack, admin: httpx.Client, tmp_path: Path, fmt: str
) -> None:
    listing = items(stack, admin)["items"]
    if not any(i["decision"] == "reject" for i in listing):
        assert decide(stack, admin, listing[-2]["key"], {"action": "reject"}).status_code == 200
    counts = items(stack, admin)
    rejected = {i["key"] for i in counts["items"] if i["decision"] == "reject"}
    r = admin.post(f"/review/{stack.job_id}/export", data={"csrf_token": csrf(admin), "format": fmt})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/zip"
    assert f"{stack.job_id}-{fmt}.zip" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
        zf.extractall(tmp_path / "out")
    expected = counts["total"] - len(rejected)
    assert image_count(manifest) == expected == int(r.headers["x-images"])
    kept = {
        Path(rec.file_name).stem
        for e in read_manifest(tmp_path / "out").files
        for rec in ([e.record] if e.record else e.samples)
    }
    assert not kept & rejected and len(kept) == expected
    report = verify_manifest(tmp_path / "out")
    assert report.ok, report.problems


# --- 9. the reader study ------------------------------------------------------------------------------
def test_a_reader_study_hides_metadata_and_its_results_add_up(stack: Stack, admin: httpx.Client) -> None:
    assert PATIENT_NAME.encode() in (stack.tmp / "meta-real" / "patient.dcm").read_bytes()
    study_id, links = study_links(make_study(admin, real="meta-real", synthetic="job", images="4"))
    reader = signed_in(stack, links[0])
    sizes: set[tuple[int, int]] = set()
    served, said = [], {}
    try:
        page = reader.get(f"/study/{study_id}")
        assert page.status_code == 200 and "Doe" not in page.text
        token = csrf_of(page.text)
        while True:
            r = reader.get(f"/api/study/{study_id}/next")
            assert r.status_code == 200, r.text
            body = r.json()
            if body["done"]:
                break
            assert set(body) == {"done", "item_id", "number", "total", "image"}
            text = r.text.lower()
            assert not any(w in text for w in ("truth", "source", "real", "synthetic", "doe", "film", "job"))
            img = reader.get(body["image"])
            assert img.status_code == 200 and img.headers["content-type"] == "image/png"
            data = img.content
            assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data
            assert b"Doe" not in data and b"hipgen" not in data
            chunks = png_chunk_types(data)
            assert set(chunks) == {"IHDR", "IDAT", "IEND"} and chunks[0] == "IHDR" and chunks[-1] == "IEND"
            sizes.add(Image.open(io.BytesIO(data)).size)
            served.append(body["item_id"])
            said[body["item_id"]] = "synthetic" if len(served) % 2 else "real"
            answer = {"item_id": body["item_id"], "said": said[body["item_id"]], "confidence": 3}
            r = reader.post(f"/api/study/{study_id}/answer", json=answer, headers={"X-CSRF-Token": token})
            assert r.status_code == 200, r.text
            r = reader.post(f"/api/study/{study_id}/answer", json=answer, headers={"X-CSRF-Token": token})
            assert r.status_code == 409, r.text  # once only
        assert body["answered"] == body["total"] == 4 and len(set(served)) == 4
        # one common square size, never above the setting: neither shape nor resolution tells the origin
        ((w, h),) = sizes
        assert w == h <= stack.settings.review_study_display_size
    finally:
        reader.close()

    answers = list(csv.DictReader(io.StringIO(admin.get(f"/studies/{study_id}/answers.csv").text)))
    assert len(answers) == 4 and {a["item_id"] for a in answers} == set(served)
    assert all(a["reader"] == "reader 1" and a["said"] == said[a["item_id"]] for a in answers)
    assert sorted(a["truth"] for a in answers) == ["real", "real", "synthetic", "synthetic"]
    assert all(a["correct"] == str(a["said"] == a["truth"]) for a in answers)
    results = list(csv.DictReader(io.StringIO(admin.get(f"/studies/{study_id}/results.csv").text)))
    assert [r["scope"] for r in results] == ["reader", "pooled"]
    correct = sum(a["said"] == a["truth"] for a in answers)
    for row in results:
        assert int(row["n"]) == 4 and int(row["correct"]) == correct
        confusion = [int(row[c]) for c in ("real_said_real", "real_said_synthetic")]
        confusion += [int(row[c]) for c in ("synthetic_said_real", "synthetic_said_synthetic")]
        assert sum(confusion) == 4 and confusion[0] + confusion[3] == correct


def test_reader_answers_with_bad_input_answer_400_and_record_nothing(
    stack: Stack, admin: httpx.Client
) -> None:
    study_id, links = study_links(make_study(admin, images="2", readers="1"))
    reader = signed_in(stack, links[0])
    try:
        token = csrf_of(reader.get(f"/study/{study_id}").text)
        item_id = reader.get(f"/api/study/{study_id}/next").json()["item_id"]
        good = {"item_id": item_id, "said": "real", "confidence": 3}
        for change, field in (
            ({"said": "maybe"}, "said"),
            ({"confidence": 0}, "confidence"),
            ({"confidence": 6}, "confidence"),
            ({"confidence": 2.5}, "confidence"),
            ({"confidence": True}, "confidence"),
            ({"item_id": None}, "item_id"),
        ):
            r = reader.post(
                f"/api/study/{study_id}/answer", json={**good, **change}, headers={"X-CSRF-Token": token}
            )
            assert r.status_code == 400 and r.json()["error"].startswith(field), (change, r.text)
        r = reader.post(
            f"/api/study/{study_id}/answer",
            json={**good, "item_id": "0" * 16},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 409  # never shown to this reader
        assert admin.get(f"/studies/{study_id}/answers.csv").text.strip().count("\n") == 0  # header only
        r = reader.post(f"/api/study/{study_id}/answer", json=good, headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
    finally:
        reader.close()


# --- 10. rate limits ----------------------------------------------------------------------------------
@pytest.fixture
def limited_app(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., RunningApp]]:
    """A second app on the first stack's gateway, with its own database and tight rate limits."""
    running: list[RunningApp] = []

    def make(rps: float, burst: int) -> RunningApp:
        settings = Settings(
            review_db_url=f"sqlite:///{tmp_path}/limited-{len(running)}.db",
            review_data_root=stack.tmp,
            review_gateway_address=stack.settings.review_gateway_address,
            review_rate_limit_rps=rps,
            review_rate_limit_burst=burst,
        )
        running.append(serve_in_thread(build_app(settings)))
        return running[-1]

    yield make
    for app in running:
        app.stop()


def test_the_third_quick_request_gets_429_with_retry_after(limited_app: Callable[..., RunningApp]) -> None:
    app = limited_app(1, 2)
    with httpx.Client(base_url=app.url, timeout=30) as c:
        codes = [c.get("/healthz").status_code for _ in range(2)]
        r = c.get("/healthz")
        assert codes == [200, 200] and r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-frame-options"] == "DENY"  # refusals carry the security headers too
        # invitation links refill far slower (guessing one is the attack)
        invite = [c.get("/invite/guess").status_code for _ in range(3)]
        assert invite[:2] == [200, 200] and invite[2] == 429
        slow = c.get("/invite/guess")
        assert int(slow.headers["retry-after"]) > int(r.headers["retry-after"])


def test_invitation_paths_have_a_smaller_bucket(limited_app: Callable[..., RunningApp]) -> None:
    app = limited_app(1, 20)
    with httpx.Client(base_url=app.url, timeout=30) as c:
        invite = [c.get(f"/invite/guess-{i}").status_code for i in range(11)]
        assert invite == [200] * 10 + [429]  # ten tries, while the general bucket holds twenty
        general = [c.get("/healthz").status_code for _ in range(12)]
        assert general == [200] * 12
