"""moto's S3 on 127.0.0.1 with a fault-injecting front, for the fault-injection harness.

One in-process moto S3 (its state is per process) served on two ports: ``clean_endpoint`` answers
every request, ``endpoint`` goes through :class:`FaultInjector` first, which answers some requests with
``500 InternalError`` and the S3 XML error body that AWS sends (no body to a HEAD), having read the
request's body, so the connection stays usable as it would with AWS. (A WSGI layer in front of moto's
app rather than a socket proxy: the same requests and answers, without re-framing HTTP.) Point the
processes under test at ``endpoint`` (the ``AWS_*`` variables of :meth:`FaultyS3.env`), and check what
they wrote through ``clean_endpoint``.

Modes (changed at any time, thread-safe): ``fail_every = k`` fails every k-th request (0: none), and
``outage = True`` fails every request until it is set back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    "<Message>We encountered an internal error. Please try again.</Message>"
    "<RequestId>{rid}</RequestId><HostId>fault-injection</HostId></Error>"
)


class FaultInjector:
    """WSGI middleware: the fault modes above, and counts of requests seen and failed."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.fail_every = 0
        self.outage = False
        self.requests = 0
        self.injected = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.requests += 1
            fail = self.outage or (self.fail_every > 0 and self.requests % self.fail_every == 0)
            if fail:
                self.injected += 1
        if not fail:
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream for us
            stream.read()
        body = ERROR_BODY.format(rid=uuid.uuid4().hex[:16].upper()).encode()
        if environ["REQUEST_METHOD"] == "HEAD":  # as S3 does: the status alone (a body would break HTTP)
            body = b""
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body]


class FaultyS3:
    """Start with :meth:`start`, stop with :meth:`stop`; ``faults`` is the :class:`FaultInjector`."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self.faults = FaultInjector(app)
        self._servers = [
            make_server("127.0.0.1", 0, a, threaded=True, request_handler=MotoRequestHandler)
            for a in (app, self.faults)
        ]
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers]

    @property
    def clean_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_port}"

    def env(self) -> dict[str, str]:
        """What a process needs to use the faulty endpoint through fsspec/s3fs (never AWS)."""
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.clean_endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket=name)

    def filesystem(self) -> Any:
        """An s3fs filesystem on the clean endpoint (what a checker reads through)."""
        import s3fs

        return s3fs.S3FileSystem(
            key="test",
            secret="test",
            endpoint_url=self.clean_endpoint,
            client_kwargs={"region_name": "us-east-1"},
            skip_instance_cache=True,
        )

    def start(self) -> FaultyS3:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request on stderr
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(10)


__all__ = ["ERROR_BODY", "FaultInjector", "FaultyS3"]
