"""Structured logging: one JSON object per line, with the request id of the RPC in progress.

Every line has ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg`` and
``request_id`` (from :data:`request_id_var`, set per RPC by an interceptor; ``null`` outside one),
then any ``extra={...}`` fields, then ``exc`` when an exception is attached::

    log.info("server listening", extra={"address": "127.0.0.1:50051", "port": 50051})
    {"ts": "2025-01-01T12:00:00.000Z", "level": "INFO", "logger": "services.server",
     "msg": "server listening", "request_id": null, "address": "127.0.0.1:50051", "port": 50051}

Never pixel data (DESIGN §4, §6): ``bytes``-like and array-like extra values are replaced by a summary
(``<bytes: 1234>``, ``<array float32 (512, 512)>``), whatever the caller passes. Patient identifiers
are the caller's duty: log file names and ids, never DICOM header values.

No extra dependency: ``json`` plus a ~50-line :class:`logging.Formatter` subclass is all that
python-json-logger or structlog would give us here, and the stdlib keeps the serving image small and
every third-party library's ``logging`` calls flowing through the same handler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hipgen.settings import Settings

#: Request id of the RPC (or job) this thread/task is serving; ``None`` outside one.
request_id_var: ContextVar[str | None] = ContextVar("hipgen_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_MAX_STR = 2000  # longer strings are cut: a log line is not a data channel


def new_request_id() -> str:
    """A fresh random request id (32 hex digits)."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Bind a request id (a new one when ``None``) for the duration of the block."""
    rid = request_id or new_request_id()
    token = request_id_var.set(rid)
    try:
        yield rid
    finally:
        request_id_var.reset(token)


def safe_value(value: Any) -> Any:
    """``value`` made JSON-safe and free of pixel data (bytes and arrays become a summary)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<bytes: {len(value)}>"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy / torch arrays, without importing them
        return f"<array {value.dtype} {tuple(value.shape)}>"
    if isinstance(value, dict):
        return {str(k): safe_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [safe_value(v) for v in value]
    return safe_value(str(value))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: safe_value(v) for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": safe_value(record.getMessage()),
            "request_id": request_id_var.get(),
        }
        for k, v in _extras(record).items():
            out.setdefault(k, v)  # an extra never overwrites a core field
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable line for a terminal: time, level, logger, [request id], message, extras."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id_var.get()
        extras = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _extras(record).items())
        head, _, tail = line.partition("\n")  # keep a traceback below the first line
        head = " ".join(p for p in (head, f"[{rid}]" if rid else "", extras) if p)
        return f"{head}\n{tail}" if tail else head


class _HipgenHandler(logging.StreamHandler):
    """Marks the handler configure_logging installed, so that a second call replaces it."""


def configure_logging(
    settings: Settings | None = None,
    *,
    level: str | None = None,
    fmt: str | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send all logging to one handler on ``stream`` (default stderr) in ``settings.log_format``.

    ``level``/``fmt`` override the settings (defaults ``INFO`` and ``json`` without settings).
    Idempotent: calling it again replaces the handler it installed and leaves other handlers alone.
    """
    level = (level or (settings.log_level if settings else "INFO")).upper()
    fmt = fmt or (settings.log_format if settings else "json")
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {fmt!r}")
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _HipgenHandler)]:
        root.removeHandler(h)
    handler = _HipgenHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
