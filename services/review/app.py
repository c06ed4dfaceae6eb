"""The review and reader-study web app: Starlette with Jinja templates, served by uvicorn.

Starlette rather than FastAPI: the app is a dozen server-rendered pages and a few JSON calls made by
its own scripts; it needs no OpenAPI schema or request models, and Starlette's sessions, templates,
static files and thread pool are all it uses. The browser talks only to this app; the app talks to the
gateway over gRPC (:mod:`services.review.gateway`) and reads and writes the dataset folders the
gateway's jobs wrote.

Pages: ``/`` (dashboard), ``/invite/<token>`` (one-time sign-in), ``/review/<job>`` (label review),
``/studies/new``, ``/studies/<id>`` (results, invitations), ``/study/<id>`` (the reader's view).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hipgen import anatomy
from hipgen.client import ClientError
from hipgen.data.datasets import FORMATS
from hipgen.data.record import LabelRecord
from hipgen.review.display import DisplayImage, display_png, list_images, study_images
from hipgen.review.study import Answer, answers_csv, plan_study, results_csv, results_plot_png, study_results
from hipgen.settings import Settings
from services.audit import audit
from services.review.datasets import JobDataset, ReviewItem, zip_folder
from services.review.gateway import GatewayLink, JobNotReviewable, local_output
from services.review.security import (
    CSRFMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
    csrf_token,
)
from services.review.store import (
    ACTIONS,
    ADMIN,
    CORRECT,
    READER,
    REJECT,
    REVIEWER,
    Event,
    ReviewStore,
    Study,
    User,
)

log = logging.getLogger("services.review")
HERE = Path(__file__).parent
SESSION_COOKIE = "hipgen_review"
SESSION_MAX_AGE_S = 8 * 3600
DISPLAY_MAX_SIDE = 1024
KEYPOINT_FIELDS = ("left_head", "right_head", "left_rim", "right_rim")


class ReviewApp:
    """The app's shared state: settings, store, gateway link, open datasets."""

    def __init__(self, settings: Settings, *, gateway: GatewayLink | None = None) -> None:
        self.settings = settings
        self.store = ReviewStore(settings.review_db_url)
        self.gateway = gateway or GatewayLink(
            settings.review_gateway_address,
            settings.review_gateway_token_file,
            settings.review_gateway_ca_file,
        )
        self.data_root = settings.review_data_root.resolve()
        self._datasets: dict[str, JobDataset] = {}
        self._lock = threading.Lock()

    def dataset(self, job_id: str) -> JobDataset:
        """The output of a finished job, found through the gateway (which checks the token may see it)."""
        with self._lock:
            ds = self._datasets.get(job_id)
        if ds is not None:
            return ds
        root = local_output(self.gateway.job(job_id))
        if not root.is_dir():
            raise JobNotReviewable(f"job {job_id}'s output {root} is not a folder on this machine")
        with self._lock:
            return self._datasets.setdefault(job_id, JobDataset(root))

    def inside_data_root(self, raw: str, field: str) -> Path:
        try:  # "~nosuchuser" raises RuntimeError, a NUL byte ValueError: both the field's fault
            path = Path(raw).expanduser()
            path = (path if path.is_absolute() else self.data_root / path).resolve()
        except (RuntimeError, ValueError, OSError) as e:
            raise ValueError(f"{field}: {raw!r} is not a usable path ({e})") from None
        if not path.is_relative_to(self.data_root):
            raise ValueError(f"{field}: {raw} is outside the review data root {self.data_root}")
        if not path.is_dir():
            raise ValueError(f"{field}: {raw} is not a folder")
        return path


# --- sessions, roles, errors --------------------------------------------------------------------------
def _app(request: Request) -> ReviewApp:
    return request.app.state.review


def current_user(request: Request) -> User | None:
    """The signed-in person, looked up once per request (the role check and the page both ask)."""
    if not hasattr(request.state, "user"):
        uid = request.session.get("uid")
        request.state.user = _app(request).store.user(uid) if isinstance(uid, str) else None
    return request.state.user


def require(request: Request, *roles: str) -> User:
    """The signed-in person when their role is one of ``roles`` (admin passes every check but the
    reader's own study view); 401 without a session, 403 otherwise."""
    user = current_user(request)
    if user is None:
        raise HTTPException(401, "sign in with your invitation link first")
    if user.role not in roles and not (user.role == ADMIN and READER not in roles):
        raise HTTPException(403, f"this page needs the role {' or '.join(roles)}; you are {user.role}")
    return user


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _wants_json(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return page(
        request, "message.html", {"title": f"Error {exc.status_code}", "message": exc.detail}, exc.status_code
    )


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    ctx = {"user": current_user(request), "csrf": csrf_token(request.session), **context}
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def _job_or_404(request: Request, job_id: str) -> JobDataset:
    try:
        return _app(request).dataset(job_id)
    except ClientError as e:
        status = {"NOT_FOUND": 404, "PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400}.get(e.code_name, 502)
        raise HTTPException(status, f"gateway: {e.message}") from e
    except JobNotReviewable as e:
        raise HTTPException(409, str(e)) from e


# --- sign-in ------------------------------------------------------------------------------------------
async def home(request: Request) -> Response:
    user = current_user(request)
    if user is None:
        return page(request, "signin.html", {})
    if user.role == READER:
        return RedirectResponse(f"/study/{user.study_id}", 303)
    app = _app(request)
    jobs, gateway_error = [], None
    try:
        jobs = await run_in_threadpool(app.gateway.jobs)
    except ClientError as e:
        gateway_error = f"{e.code_name}: {e.message}"
    studies = app.store.studies() if user.role == ADMIN else []
    return page(request, "home.html", {"jobs": jobs, "gateway_error": gateway_error, "studies": studies})


async def invite_page(request: Request) -> Response:
    return page(request, "invite.html", {"token": request.path_params["token"]})


async def invite_redeem(request: Request) -> Response:
    user = _app(request).store.redeem(request.path_params["token"])
    if user is None:
        audit("review.invite_refused", client=(request.client or ("?",))[0])
        raise HTTPException(
            410, "this invitation link is unknown, expired or already used: ask for a new one"
        )
    request.session.clear()  # a fresh session (and CSRF token) for the new identity
    request.session["uid"] = user.user_id
    audit("review.sign_in", user=user.name, role=user.role, study=user.study_id)
    return RedirectResponse(f"/study/{user.study_id}" if user.role == READER else "/", 303)


async def sign_out(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", 303)


async def create_invite(request: Request) -> Response:
    user = require(request, ADMIN)
    form = await request.form()
    role = str(form.get("role", ""))
    if role not in (ADMIN, REVIEWER):
        raise bad_request("role: choose reviewer or admin (reader links are made on a study's page)")
    name = str(form.get("name", "")).strip()[:200]
    if not name:
        raise bad_request("name: say who the link is for")
    token = _app(request).store.invite(
        role, name, created_by=user.name, ttl_s=_app(request).settings.review_invite_ttl_h * 3600
    )
    audit("review.invite", by=user.name, role=role, name=name)
    links = [(name, str(request.url_for("invite_page", token=token)))]
    return page(request, "links.html", {"links": links, "role": role, "back": "/"})


# --- label review -------------------------------------------------------------------------------------
async def review_page(request: Request) -> Response:
    require(request, REVIEWER)
    job_id = request.path_params["job_id"]
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    fmt = ds.manifest().format
    return page(request, "review.html", {"job_id": job_id, "format": fmt, "formats": FORMATS})


def _confidence(p: tuple[float, float] | None) -> float | None:
    """How sure the classifier is of the worse side's class: |2p − 1| in [0, 1]."""
    return None if p is None else min(abs(2 * p[0] - 1), abs(2 * p[1] - 1))


def _item_json(item: ReviewItem, decision: str | None, conf: tuple[float, float] | None) -> dict[str, Any]:
    r = item.record
    return {
        "key": item.key,
        "file_name": item.file_name,
        "na_left": r.na_left,
        "na_right": r.na_right,
        "requested": item.requested,
        "delta_deg": item.delta_deg,
        "confidence": _confidence(conf),
        "decision": decision,
    }


def _float(raw: str | None, name: str) -> float | None:
    if raw in (None, ""):
        return None
    try:
        v = float(raw)
    except ValueError:
        raise bad_request(f"{name}: not a number: {raw!r}") from None
    if not math.isfinite(v):
        raise bad_request(f"{name}: must be finite")
    return v


async def api_items(request: Request) -> Response:
    require(request, REVIEWER)
    job_id = request.path_params["job_id"]
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    q = request.query_params
    min_delta, max_conf = (
        _float(q.get("min_delta"), "min_delta"),
        _float(q.get("max_confidence"), "max_confidence"),
    )
    status = q.get("status", "all")
    if status not in ("all", "pending", *ACTIONS):
        raise bad_request(f"status: one of all, pending, {', '.join(ACTIONS)}")
    store = _app(request).store
    decisions, confs = store.decisions(job_id), store.confidences(job_id)
    rows = []
    all_items = await run_in_threadpool(ds.items)
    for it in all_items:
        row = _item_json(it, decisions.get(it.key), confs.get(it.key))
        if min_delta is not None and (row["delta_deg"] is None or row["delta_deg"] < min_delta):
            continue
        if max_conf is not None and (row["confidence"] is None or row["confidence"] > max_conf):
            continue
        if status == "pending" and row["decision"] is not None:
            continue
        if status in ACTIONS and row["decision"] != status:
            continue
        rows.append(row)
    counts = _action_counts(decisions)
    measuring = _app(request).gateway.measuring.get(job_id)
    return JSONResponse(
        {
            "items": rows,
            "total": len(all_items),
            "reviewed": sum(counts.values()),
            "counts": counts,
            "confidences": len(confs),
            "measuring": measuring,
        }
    )


def _action_counts(decisions: dict[str, str]) -> dict[str, int]:
    counted = Counter(decisions.values())
    return {a: counted[a] for a in ACTIONS}


def _item_or_404(ds: JobDataset, key: str) -> ReviewItem:
    item = ds.item(key)
    if item is None:
        raise HTTPException(404, f"no image {key!r} in this dataset")
    return item


async def _job_item(request: Request) -> tuple[str, str, JobDataset, ReviewItem]:
    """The job id, item key, dataset and item a ``/api/jobs/{job_id}/items/{key}`` route names."""
    job_id, key = request.path_params["job_id"], request.path_params["key"]
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    return job_id, key, ds, _item_or_404(ds, key)


async def api_item(request: Request) -> Response:
    require(request, REVIEWER)
    job_id, key, ds, item = await _job_item(request)
    store = _app(request).store
    history = [e.to_dict() for e in store.events(job_id, key)]
    img = await run_in_threadpool(_display, ds, item)
    decision = history[-1]["action"] if history else None
    body = _item_json(item, decision, store.confidences(job_id).get(key))
    body.update(
        record=item.record.to_dict(),
        history=history,
        image={"width": img.width, "height": img.height, "scale": img.scale},
    )
    return JSONResponse(body)


@functools.lru_cache(maxsize=512)
def _display(ds: JobDataset, item: ReviewItem) -> DisplayImage:
    """The image as the browser sees it (pixels only, no metadata). Cached: the item page asks for its
    size and the image route for its bytes; a correction makes a new item (its record changed) but
    never new pixels, so a stale entry is only ever a spare copy."""
    return display_png(ds.pixels(item), max_side=DISPLAY_MAX_SIDE)


async def api_item_image(request: Request) -> Response:
    require(request, REVIEWER)
    _, _, ds, item = await _job_item(request)
    img = await run_in_threadpool(_display, ds, item)
    return Response(img.png, media_type="image/png")


def _is_number(v: Any) -> bool:
    """A JSON number (``true`` and ``false`` are ints to Python, but no pixel coordinate)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def keypoints_from_json(body: Any, record: LabelRecord) -> anatomy.HipKeypoints:
    """The corrected keypoints a browser sent, checked: every point inside the image, radii positive,
    angles defined. Raises HTTP 400 naming the field."""
    if not isinstance(body, dict):
        raise bad_request("keypoints: expected an object")
    pts: dict[str, tuple[float, float]] = {}
    for name in KEYPOINT_FIELDS:
        v = body.get(name)
        if not (isinstance(v, list) and len(v) == 2 and all(_is_number(c) for c in v)):
            raise bad_request(f"keypoints.{name}: expected [x, y] in image pixels")
        x, y = float(v[0]), float(v[1])
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            raise bad_request(f"keypoints.{name}: must be finite and inside the image")
        pts[name] = (x, y)
    radii = {}
    for name in ("left_radius", "right_radius"):
        v = body.get(name)
        if not _is_number(v) or not math.isfinite(v) or v <= 0:
            raise bad_request(f"keypoints.{name}: expected a positive number of pixels")
        radii[name] = float(v)
    kp = anatomy.HipKeypoints(**pts, **radii)
    try:
        _ = kp.na_left, kp.na_right
    except ValueError as e:
        raise bad_request(f"keypoints: {e}") from None
    return kp


async def api_decide(request: Request) -> Response:
    user = require(request, REVIEWER)
    job_id, key = request.path_params["job_id"], request.path_params["key"]
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body: not JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body: expected a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise bad_request(f"action: one of {', '.join(ACTIONS)}")
    seconds = body.get("seconds")
    seconds = float(seconds) if _is_number(seconds) and math.isfinite(seconds) and seconds >= 0 else None
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    item = _item_or_404(ds, key)
    kp = keypoints_from_json(body.get("keypoints"), item.record) if action == CORRECT else None
    if kp is not None:
        img = await run_in_threadpool(_display, ds, item)
        w, h = img.width / img.scale, img.height / img.scale
        for name in KEYPOINT_FIELDS:
            x, y = getattr(kp, name)
            if x > w or y > h:
                raise bad_request(
                    f"keypoints.{name}: ({x:.1f}, {y:.1f}) lies outside the {w:.0f}×{h:.0f} image"
                )
    app = _app(request)

    def decide() -> tuple[ReviewItem, int]:
        # one decision at a time per dataset, read → write back → record: the previous value is the one
        # on disk now (another reviewer may have just corrected or moved the image), and the event is
        # stored only once the dataset holds it, so a failed write leaves no phantom decision
        with ds.lock:
            current = _item_or_404(ds, key)
            record = current.record.with_keypoints(kp) if kp is not None else current.record
            event = Event(
                job_id,
                key,
                action,
                user.name,
                time.time(),
                seconds,
                current.record.to_dict(),
                record.to_dict(),
            )
            trail = [*(e.to_dict() for e in app.store.events(job_id)), event.to_dict()]
            decisions = {e["file_name"]: e["action"] for e in trail}  # the latest wins
            corrections = {current.file_name: record} if kp is not None else {}
            manifest = ds.write_back(corrections, trail, decisions)
            app.store.add_event(event)
            return ds.item(key) or current, len(manifest.files)

    try:
        new, files = await run_in_threadpool(decide)
    except (OSError, ValueError) as e:
        log.exception("write-back into %s failed", ds.root)
        raise HTTPException(500, f"writing the labels back failed, nothing was changed: {e}") from e
    audit("review.decision", job=job_id, item=key, action=action, user=user.name)
    return JSONResponse(
        {
            "decision": action,
            "record": new.record.to_dict(),
            "file_name": new.file_name,
            "manifest_files": files,
        }
    )


async def api_measure(request: Request) -> Response:
    """Start measuring the job's images through the gateway (model confidence), in the background."""
    require(request, REVIEWER)
    job_id = request.path_params["job_id"]
    app = _app(request)
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    if job_id in app.gateway.measuring:
        return JSONResponse({"started": False, "measuring": app.gateway.measuring[job_id]})
    app.gateway.measuring[job_id] = (0, 0)  # claimed before any await: a second click starts nothing
    try:
        items = await run_in_threadpool(ds.items)
        images = await run_in_threadpool(lambda: [(it.key, ds.image_bytes(it)) for it in items])
    except BaseException:
        app.gateway.measuring.pop(job_id, None)
        raise
    app.gateway.measuring[job_id] = (0, len(images))
    threading.Thread(
        target=app.gateway.measure_confidences, args=(job_id, images, app.store), daemon=True
    ).start()
    return JSONResponse({"started": True, "measuring": [0, len(images)]})


async def export(request: Request) -> Response:
    user = require(request, REVIEWER)
    job_id = request.path_params["job_id"]
    form = await request.form()
    fmt = str(form.get("format", ""))
    if fmt not in FORMATS:
        raise bad_request(f"format: one of {', '.join(FORMATS)}")
    ds = await run_in_threadpool(_job_or_404, request, job_id)
    decisions = _app(request).store.decisions(job_id)
    provenance = {
        "reviewed_from_job": job_id,
        "review": _action_counts(decisions),
    }

    def build() -> tuple[bytes, int]:
        with tempfile.TemporaryDirectory(prefix="hipgen-export-") as tmp:
            out = Path(tmp) / f"{job_id}-{fmt}"
            n = ds.export(out, fmt, keep=lambda key: decisions.get(key) != REJECT, provenance=provenance)
            return zip_folder(out), n

    try:
        data, n = await run_in_threadpool(build)
    except (OSError, ValueError) as e:
        raise HTTPException(500, f"export failed: {e}") from e
    audit("review.export", job=job_id, format=fmt, images=n, user=user.name)
    return Response(
        data,
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="{job_id}-{fmt}.zip"', "x-images": str(n)},
    )


# --- reader studies -----------------------------------------------------------------------------------
async def study_new(request: Request) -> Response:
    require(request, ADMIN)
    return page(
        request, "study_new.html", {"data_root": _app(request).data_root, "values": {}, "error": None}
    )


def _int(raw: Any, name: str, lo: int, hi: int) -> int:
    try:
        v = int(str(raw))
    except ValueError:
        raise ValueError(f"{name}: not a whole number: {raw!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}: must be between {lo} and {hi}")
    return v


async def study_create(request: Request) -> Response:
    user = require(request, ADMIN)
    app = _app(request)
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    try:
        name = values.get("name", "").strip()[:200] or "reader study"
        real = app.inside_data_root(values.get("real", ""), "real")
        synthetic = app.inside_data_root(values.get("synthetic", ""), "synthetic")
        images = _int(values.get("images", ""), "images", 2, 10000)
        seed = _int(values.get("seed", "0") or "0", "seed", 0, 2**63 - 1)
        readers = _int(values.get("readers", "1") or "1", "readers", 0, 100)
        real_files = await run_in_threadpool(list_images, real)
        synthetic_files = await run_in_threadpool(list_images, synthetic)
        plan = plan_study(
            [str(p) for p in real_files], [str(p) for p in synthetic_files], images=images, seed=seed
        )
    except ValueError as e:
        return page(
            request, "study_new.html", {"data_root": app.data_root, "values": values, "error": str(e)}, 400
        )
    study = Study(secrets.token_hex(8), name, str(real), str(synthetic), images, seed, user.name, time.time())
    size = app.settings.review_study_display_size
    try:
        _, pngs = await run_in_threadpool(study_images, [Path(it.source) for it in plan], size)
    except ValueError as e:  # an unreadable image: say which, before any reader sees the study
        return page(
            request, "study_new.html", {"data_root": app.data_root, "values": values, "error": str(e)}, 400
        )
    app.store.create_study(study, [(it.item_id, it.position, it.source, it.truth) for it in plan], pngs)
    audit("review.study_created", study=study.study_id, by=user.name, items=len(plan))
    links = _reader_links(request, study, readers, user)
    return page(request, "links.html", {"links": links, "role": READER, "back": f"/studies/{study.study_id}"})


def _reader_links(request: Request, study: Study, n: int, by: User) -> list[tuple[str, str]]:
    app = _app(request)
    start = len(app.store.study_readers(study.study_id)) + app.store.open_invites(study.study_id)
    out = []
    for i in range(n):
        name = f"reader {start + i + 1}"
        token = app.store.invite(
            READER,
            name,
            created_by=by.name,
            ttl_s=app.settings.review_invite_ttl_h * 3600,
            study_id=study.study_id,
        )
        out.append((name, str(request.url_for("invite_page", token=token))))
    return out


def _study_or_404(request: Request, study_id: str) -> Study:
    study = _app(request).store.study(study_id)
    if study is None:
        raise HTTPException(404, f"no study {study_id!r}")
    return study


async def study_invites(request: Request) -> Response:
    user = require(request, ADMIN)
    study = _study_or_404(request, request.path_params["study_id"])
    form = await request.form()
    try:
        n = _int(form.get("readers", "1"), "readers", 1, 100)
    except ValueError as e:
        raise bad_request(str(e)) from None
    links = _reader_links(request, study, n, user)
    return page(request, "links.html", {"links": links, "role": READER, "back": f"/studies/{study.study_id}"})


def _answers(request: Request, study: Study) -> list[Answer]:
    """The study's answers, each reader named uniquely (two people may share a name; results group by
    reader, so a clash would merge them)."""
    rows = _app(request).store.answers(study.study_id)
    names: dict[str, str] = {}
    for a in rows:
        if a["user_id"] not in names:
            taken = sum(1 for n in names.values() if n == a["name"] or n.startswith(a["name"] + " #"))
            names[a["user_id"]] = a["name"] if not taken else f"{a['name']} #{taken + 1}"
    return [
        Answer(
            reader=names[a["user_id"]],
            item_id=a["item_id"],
            truth=a["truth"],
            said=a["said"],
            confidence=a["confidence"],
            seconds=a["answered_at"] - a["served_at"],
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a["answered_at"])),
        )
        for a in rows
    ]


async def study_results_page(request: Request) -> Response:
    require(request, ADMIN)
    study = _study_or_404(request, request.path_params["study_id"])
    answers = _answers(request, study)
    results = study_results(answers)
    app = _app(request)
    ctx = {
        "study": study,
        "results": results,
        "answers": len(answers),
        "items": len(app.store.study_items(study.study_id)),
        "readers": app.store.study_readers(study.study_id),
        "open_invites": app.store.open_invites(study.study_id),
    }
    return page(request, "study_results.html", ctx)


async def study_plot(request: Request) -> Response:
    require(request, ADMIN)
    study = _study_or_404(request, request.path_params["study_id"])
    png = await run_in_threadpool(lambda: results_plot_png(study_results(_answers(request, study))))
    return Response(png, media_type="image/png")


async def study_csv(request: Request) -> Response:
    require(request, ADMIN)
    study = _study_or_404(request, request.path_params["study_id"])
    kind = request.path_params["kind"]
    answers = _answers(request, study)
    if kind == "answers":
        data = answers_csv(answers)
    elif kind == "results":
        data = results_csv(study_results(answers))
    else:
        raise HTTPException(404, f"no {kind}.csv")
    return Response(
        data,
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="study-{study.study_id}-{kind}.csv"'},
    )


def _reader(request: Request, study_id: str) -> User:
    user = require(request, READER)
    if user.study_id != study_id:
        raise HTTPException(403, "this invitation is for another study")
    return user


async def reader_page(request: Request) -> Response:
    study = _study_or_404(request, request.path_params["study_id"])
    _reader(request, study.study_id)
    return page(request, "study.html", {"study_id": study.study_id, "name": study.name})


async def api_study_next(request: Request) -> Response:
    study = _study_or_404(request, request.path_params["study_id"])
    user = _reader(request, study.study_id)
    store = _app(request).store
    items = store.study_items(study.study_id)
    done = store.answered_items(study.study_id, user.user_id)
    left = [it for it in items if it["item_id"] not in done]
    if not left:
        return JSONResponse({"done": True, "answered": len(done), "total": len(items)})
    item = left[0]
    store.serve(study.study_id, user.user_id, item["item_id"])
    return JSONResponse(
        {
            "done": False,
            "item_id": item["item_id"],
            "number": len(done) + 1,
            "total": len(items),
            "image": f"/api/study/{study.study_id}/image/{item['item_id']}.png",
        }
    )


async def api_study_image(request: Request) -> Response:
    study = _study_or_404(request, request.path_params["study_id"])
    _reader(request, study.study_id)
    png = _app(request).store.study_image(study.study_id, request.path_params["item_id"])
    if png is None:
        raise HTTPException(404, "no such image in this study")
    return Response(png, media_type="image/png")


async def api_study_answer(request: Request) -> Response:
    study = _study_or_404(request, request.path_params["study_id"])
    user = _reader(request, study.study_id)
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body: not JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body: expected a JSON object")
    said, conf, item_id = body.get("said"), body.get("confidence"), body.get("item_id")
    if said not in ("real", "synthetic"):
        raise bad_request("said: real or synthetic")
    if not isinstance(conf, int) or isinstance(conf, bool) or not 1 <= conf <= 5:
        raise bad_request("confidence: a whole number from 1 (guess) to 5 (certain)")
    if not isinstance(item_id, str):
        raise bad_request("item_id: missing")
    if not _app(request).store.answer(study.study_id, user.user_id, item_id, said, conf):
        raise HTTPException(409, "that image was not shown to you, or you answered it already")
    return JSONResponse({"ok": True})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


# --- assembly -----------------------------------------------------------------------------------------
def session_secret(settings: Settings) -> str:
    if settings.review_session_secret_file is not None:
        from services.auth import load_secret

        return load_secret(settings.review_session_secret_file).decode()
    log.warning("review_session_secret_file is unset: signing sessions with a random key for this process")
    return secrets.token_urlsafe(32)


def build_app(settings: Settings, *, gateway: GatewayLink | None = None) -> Starlette:
    review = ReviewApp(settings, gateway=gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        review.gateway.close()
        review.store.close()

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/invite/{token}", invite_page, methods=["GET"], name="invite_page"),
        Route("/invite/{token}", invite_redeem, methods=["POST"]),
        Route("/signout", sign_out, methods=["POST"]),
        Route("/invites", create_invite, methods=["POST"]),
        Route("/review/{job_id}", review_page),
        Route("/review/{job_id}/export", export, methods=["POST"]),
        Route("/api/jobs/{job_id}/items", api_items),
        Route("/api/jobs/{job_id}/measure", api_measure, methods=["POST"]),
        Route("/api/jobs/{job_id}/items/{key}", api_item, methods=["GET"]),
        Route("/api/jobs/{job_id}/items/{key}", api_decide, methods=["POST"]),
        Route("/api/jobs/{job_id}/items/{key}/image.png", api_item_image),
        Route("/studies/new", study_new),
        Route("/studies", study_create, methods=["POST"]),
        Route("/studies/{study_id}", study_results_page),
        Route("/studies/{study_id}/invites", study_invites, methods=["POST"]),
        Route("/studies/{study_id}/plot.png", study_plot),
        Route("/studies/{study_id}/{kind}.csv", study_csv),
        Route("/study/{study_id}", reader_page),
        Route("/api/study/{study_id}/next", api_study_next),
        Route("/api/study/{study_id}/image/{item_id}.png", api_study_image),
        Route("/api/study/{study_id}/answer", api_study_answer, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(
            RateLimitMiddleware, rps=settings.review_rate_limit_rps, burst=settings.review_rate_limit_burst
        ),
        Middleware(
            SessionMiddleware,
            secret_key=session_secret(settings),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_S,
            same_site="strict",
            https_only=settings.review_secure_cookies,
        ),
        Middleware(CSRFMiddleware),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.review = review
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    return app
