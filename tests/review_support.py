"""A real stack for the review app's tests: the model services and the gateway on 127.0.0.1, one
finished dataset job written through them, and the review app served by uvicorn on a free port."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from test_gateway import MODEL_SERVICES, Running, gateway_settings, spec, wait_final

from hipgen.api.v1 import dataset_pb2
from hipgen.data.images import encode_png
from hipgen.phantom import PhantomSpec, render_phantom
from hipgen.settings import Settings
from services.review.app import build_app
from services.review.server import RunningApp, invite_link, serve_in_thread
from services.server import build_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# root in a container needs --no-sandbox; the others keep Chromium off this offline machine's network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_true(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a JS expression from outside the page. Playwright's ``wait_for_function`` evaluates its
    predicate with ``eval`` inside the page, which the app's Content-Security-Policy refuses (rightly)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


@dataclass
class Stack:
    tmp: Path
    settings: Settings
    job_id: str
    job_dir: Path
    real_dir: Path
    app: RunningApp
    gateway: Running
    model_server: object

    def admin_link(self, name: str = "admin") -> str:
        return invite_link(self.settings, "admin", name, self.app.url)

    def reviewer_link(self, name: str = "reviewer") -> str:
        return invite_link(self.settings, "reviewer", name, self.app.url)

    def close(self) -> None:
        self.app.stop()
        self.gateway.close()
        self.model_server.stop(None).wait()  # type: ignore[attr-defined]


def start_stack(tmp: Path, *, count: int = 6, real: int = 4, **review: object) -> Stack:
    server, port = build_server(Settings(port=0, metrics_port=0), services=MODEL_SERVICES)
    server.start()
    gateway = Running(gateway_settings(tmp, f"127.0.0.1:{port}"))
    job_dir = tmp / "job"
    job = gateway.datasets.CreateDatasetJob(
        dataset_pb2.CreateDatasetJobRequest(
            spec=spec(f"file://{job_dir}", count=count, images_per_shard=count)
        ),
        timeout=60,
    ).job
    final = wait_final(gateway.datasets, job.job_id)
    assert final.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, final.error
    real_dir = tmp / "real"
    real_dir.mkdir()
    for i in range(real):  # "real" films: phantoms of another size and shape than the generated set
        (real_dir / f"film-{i}.png").write_bytes(
            encode_png(render_phantom(PhantomSpec(width=320, height=256), seed=100 + i).pixels)
        )
    values: dict[str, object] = {
        "review_db_url": f"sqlite:///{tmp}/review.db",
        "review_data_root": tmp,
        "review_gateway_address": f"127.0.0.1:{gateway.gw.port}",
        "review_rate_limit_rps": 200.0,
        "review_rate_limit_burst": 400,
        **review,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    app = serve_in_thread(build_app(settings))
    return Stack(tmp, settings, job.job_id, job_dir, real_dir, app, gateway, server)


def signed_in(stack: Stack, link: str) -> httpx.Client:
    """An HTTP client that followed an invitation link (GET the page, POST its form with the token)."""
    client = httpx.Client(base_url=stack.app.url, timeout=30)
    page = client.get(link)
    page.raise_for_status()
    token = csrf_of(page.text)
    resp = client.post(link, data={"csrf_token": token})
    assert resp.status_code == 303, resp.text
    return client


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "page without a CSRF token"
    return m.group(1)
