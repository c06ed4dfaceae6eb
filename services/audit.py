"""The audit log: who did what, as one structured JSON line per event on the ``hipgen.audit`` logger.

A dedicated logger so that operators can route it (a separate handler, file or retention) apart from
the operational logs; it always logs at INFO, whatever ``log_level`` is, because an audit trail that a
verbosity setting can silence is no audit trail. Each line carries the event name, the client id of the
RPC in progress (:data:`services.auth.client_id_var`; ``null`` with auth off) and its request id::

    audit("dataset_job.created", job_id="j-1", count=200, output_uri="s3://bucket/set")
    {"ts": "...", "level": "INFO", "logger": "hipgen.audit", "msg": "dataset_job.created",
     "request_id": "4f…", "event": "dataset_job.created", "client_id": "lab-a", "job_id": "j-1", ...}

Never pixel data or patient identifiers (DESIGN §6): bytes and arrays become a summary (the formatter's
:func:`hipgen.logs.safe_value`), and fields whose names look like patient identifiers are redacted here,
whatever the caller passes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from services.auth import client_id_var

audit_log = logging.getLogger("hipgen.audit")
audit_log.setLevel(logging.INFO)

# Field names that would carry a DICOM patient/study identifier (PS3.15 basic profile attributes).
_IDENTIFYING = re.compile(
    r"patient|birth|accession|physician|institution|operator|referring|study_?id|series_?uid|"
    r"study_?uid|sop_?uid|pixel",
    re.IGNORECASE,
)
# LogRecord attributes: an ``extra`` key among them makes logging raise, so such fields are renamed.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "event",
    "client_id",
}


def audit(event: str, **fields: Any) -> None:
    """Write one audit line for ``event`` (dotted, e.g. ``dataset_job.created``) with ``fields``.

    A field named like a patient identifier is written as ``"<redacted>"``; a field named like a log
    record attribute (``name``, ``msg``, …) is written as ``field_<name>``.
    """
    extra: dict[str, Any] = {"event": event, "client_id": client_id_var.get()}
    for key, value in fields.items():
        name = f"field_{key}" if key in _RESERVED else key
        extra[name] = "<redacted>" if _IDENTIFYING.search(key) else value
    audit_log.info(event, extra=extra)


__all__ = ["audit", "audit_log"]
