"""Serving the review app with uvicorn: in the foreground (``python -m services.review``) or on a
background thread (the demo and the browser tests), always on a socket bound first so that port 0
gives a free port whose number is known before the first request."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from hipgen.logs import configure_logging
from hipgen.settings import Settings, get_settings
from services.review.app import build_app
from services.review.store import ADMIN, ROLES, ReviewStore

log = logging.getLogger("services.review")


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(app: Starlette) -> uvicorn.Server:
    # uvicorn's own access log is off: the app's audit log says who did what, without query strings
    # (an invitation token is in a path, and must not land in a log file)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", server_header=False)
    return uvicorn.Server(config)


@dataclass
class RunningApp:
    """A review app served on a background thread."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 15.0
) -> RunningApp:
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="review-app")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the review app did not start")
        time.sleep(0.02)
    return RunningApp(server, thread, host, sock.getsockname()[1])


ADMIN_LINK_PREFIX = "one-time admin sign-in link (valid 1 h):"
ADMIN_LINK_TTL_S = 3600.0


def invite_link(
    settings: Settings, role: str, name: str, base_url: str, *, ttl_s: float | None = None
) -> str:
    """A one-time sign-in link minted straight into the database (how the first admin gets in)."""
    store = ReviewStore(settings.review_db_url)
    try:
        ttl = settings.review_invite_ttl_h * 3600 if ttl_s is None else ttl_s
        token = store.invite(role, name, created_by="command line", ttl_s=ttl)
    finally:
        store.close()
    return f"{base_url.rstrip('/')}/invite/{token}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.review", description="The hipgen label-review and reader-study web app."
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the app (the default)")
    for p in (parser, serve):
        p.add_argument("--host", help="bind address (default: HIPGEN_HOST, 127.0.0.1)")
        p.add_argument(
            "--port", type=int, help="HTTP port, 0 for a free one (default: HIPGEN_REVIEW_PORT, 8090)"
        )
        p.add_argument("--config", help="TOML settings file (default: HIPGEN_CONFIG)")
        p.add_argument(
            "--admin-link", action="store_true", help="print a one-time admin sign-in link at start"
        )
    inv = sub.add_parser("invite", help="print a one-time sign-in link (e.g. the first admin's)")
    inv.add_argument("--role", choices=[r for r in ROLES if r != "reader"], default=ADMIN)
    inv.add_argument("--name", required=True, help="who the link is for (shown in the audit trail)")
    inv.add_argument("--base-url", default=None, help="the app's address as users reach it")
    inv.add_argument("--config", help="TOML settings file (default: HIPGEN_CONFIG)")
    args = parser.parse_args(argv)
    if args.command == "invite":
        settings = get_settings(args.config)
        base = args.base_url or f"http://{settings.host}:{settings.review_port}"
        print(invite_link(settings, args.role, args.name, base))
        return 0

    overrides = {k: v for k, v in (("host", args.host), ("review_port", args.port)) if v is not None}
    settings = get_settings(args.config, **overrides)
    configure_logging(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.review_secure_cookies:
        log.warning("serving the review app beyond loopback without Secure cookies: put it behind HTTPS")
    try:
        sock = bind(settings.host, settings.review_port)
    except OSError as err:
        log.error("review app failed to start", extra={"error": str(err)})
        return 1
    app = build_app(settings)
    port = sock.getsockname()[1]
    url = f"http://{settings.host}:{port}"
    extra = {"host": settings.host, "port": port, "url": url, "gateway": settings.review_gateway_address}
    log.info("review app listening", extra=extra)
    if args.admin_link:
        # to the terminal, never into the log: a working admin link in a log file would be a credential
        # anyone reading logs could use; short-lived besides
        link = invite_link(settings, ADMIN, "admin", url, ttl_s=ADMIN_LINK_TTL_S)
        print(f"{ADMIN_LINK_PREFIX} {link}", flush=True)
    _server(app).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
