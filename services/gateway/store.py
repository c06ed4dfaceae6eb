"""Dataset-job state in a SQL database through SQLAlchemy: SQLite by default, PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). One table, one row per job; the row is the job's truth for
Get/List/Watch, while the shard records in the job's destination are the truth for what is written
(see :mod:`hipgen.dataset.shards`), so a crash between the two loses nothing.

SQLAlchemy Core rather than the ORM: the job is a flat record and the servicer converts it to protobuf
itself; the ORM's identity map and sessions would only add state to keep coherent across threads.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa

from services.sqlengine import make_engine

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED = (
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLING",
    "CANCELLED",
)
ACTIVE = (QUEUED, RUNNING, CANCELLING)
FINAL = (SUCCEEDED, FAILED, CANCELLED)

_metadata = sa.MetaData()
jobs_table = sa.Table(
    "hipgen_dataset_jobs",
    _metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(200), unique=True, nullable=True),
    sa.Column("owner", sa.String(200), nullable=False, default=""),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("images_done", sa.Integer, nullable=False, default=0),
    sa.Column("images_total", sa.Integer, nullable=False, default=0),
    sa.Column("bytes_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("images_rejected", sa.Integer, nullable=False, default=0),
    sa.Column("out_of_tolerance", sa.Integer, nullable=False, default=0),
    sa.Column("shards_done", sa.Integer, nullable=False, default=0),
    sa.Column("shards_total", sa.Integer, nullable=False, default=0),
    sa.Column("manifest_uri", sa.Text, nullable=False, default=""),
    sa.Column("score_report_uri", sa.Text, nullable=False, default=""),
    sa.Column("kubernetes_job_name", sa.String(64), nullable=False, default=""),
    sa.Column("fidelity_json", sa.Text, nullable=False, default=""),
    sa.Column("error_code", sa.Integer, nullable=False, default=0),
    sa.Column("error_message", sa.Text, nullable=False, default=""),
    sa.Column("create_time", sa.Float, nullable=False, index=True),
    sa.Column("start_time", sa.Float, nullable=True),
    sa.Column("end_time", sa.Float, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, default=0),  # bumped on every change (Watch)
)


@dataclass(frozen=True)
class JobRow:
    """One job as stored."""

    job_id: str
    spec_json: str
    state: str
    create_time: float
    request_id: str | None = None
    owner: str = ""
    images_done: int = 0
    images_total: int = 0
    bytes_written: int = 0
    images_rejected: int = 0
    out_of_tolerance: int = 0
    shards_done: int = 0
    shards_total: int = 0
    manifest_uri: str = ""
    score_report_uri: str = ""
    kubernetes_job_name: str = ""
    fidelity_json: str = ""
    error_code: int = 0
    error_message: str = ""
    start_time: float | None = None
    end_time: float | None = None
    version: int = 0

    @property
    def fidelity(self) -> dict[str, Any] | None:
        return json.loads(self.fidelity_json) if self.fidelity_json else None


_COLUMNS = [f.name for f in fields(JobRow)]


class PageTokenError(ValueError):
    pass


@dataclass
class JobStore:
    """Jobs in a database at ``url``; thread-safe (a connection per call from SQLAlchemy's pool).
    ``changed`` is notified on every write in this process, so Watch wakes at once."""

    url: str
    engine: sa.Engine = field(init=False)
    changed: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        _metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- writes ----------------------------------------------------------------------------------------
    def create(
        self, spec_json: str, *, request_id: str | None, owner: str, images_total: int, shards_total: int
    ) -> tuple[JobRow, bool]:
        """Insert a QUEUED job; returns ``(job, created)``. A ``request_id`` seen before returns that job
        (``created`` False) — a retried CreateDatasetJob never starts a second job."""
        if request_id:
            existing = self.by_request_id(request_id)
            if existing is not None:
                return existing, False
        row = JobRow(
            job_id=uuid.uuid4().hex,
            spec_json=spec_json,
            state=QUEUED,
            create_time=time.time(),
            request_id=request_id or None,
            owner=owner,
            images_total=images_total,
            shards_total=shards_total,
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(jobs_table.insert().values(**{c: getattr(row, c) for c in _COLUMNS}))
        except sa.exc.IntegrityError:  # the same request_id raced in from another call
            existing = self.by_request_id(request_id or "")
            if existing is None:
                raise
            return existing, False
        self._notify()
        return row, True

    def update(
        self, job_id: str, *, only_if_state: tuple[str, ...] | None = None, **changes: Any
    ) -> JobRow | None:
        """Change columns of one job (and bump its version); with ``only_if_state`` only when its state
        is one of those. Returns the job after the change, or None when nothing changed."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown job columns {sorted(unknown)}")
        stmt = jobs_table.update().where(jobs_table.c.job_id == job_id)
        if only_if_state is not None:
            stmt = stmt.where(jobs_table.c.state.in_(only_if_state))
        with self.engine.begin() as conn:
            n = conn.execute(stmt.values(**changes, version=jobs_table.c.version + 1)).rowcount
        self._notify()
        return self.get(job_id) if n else None

    # -- reads -----------------------------------------------------------------------------------------
    def _row(self, r: Any) -> JobRow:
        return JobRow(**{c: getattr(r, c) for c in _COLUMNS})

    def get(self, job_id: str) -> JobRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(jobs_table).where(jobs_table.c.job_id == job_id)).first()
        return None if r is None else self._row(r)

    def by_request_id(self, request_id: str) -> JobRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(jobs_table).where(jobs_table.c.request_id == request_id)).first()
        return None if r is None else self._row(r)

    def in_states(self, states: tuple[str, ...]) -> list[JobRow]:
        """Jobs in ``states``, oldest first (the order a restarted gateway resumes them in)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs_table).where(jobs_table.c.state.in_(states)).order_by(jobs_table.c.create_time)
            ).all()
        return [self._row(r) for r in rows]

    def count(self, states: tuple[str, ...]) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(jobs_table).where(jobs_table.c.state.in_(states))
                ).scalar_one()
            )

    def page(
        self, page_size: int, page_token: str = "", state: str | None = None, owner: str | None = None
    ) -> tuple[list[JobRow], str]:
        """Newest first; the token is the (create_time, job_id) key of the last job returned, so pages
        stay stable while new jobs arrive."""
        stmt = sa.select(jobs_table)
        if state:
            stmt = stmt.where(jobs_table.c.state == state)
        if owner is not None:
            stmt = stmt.where(jobs_table.c.owner == owner)
        if page_token:
            t, jid = decode_page_token(page_token)
            stmt = stmt.where(
                sa.or_(
                    jobs_table.c.create_time < t,
                    sa.and_(jobs_table.c.create_time == t, jobs_table.c.job_id < jid),
                )
            )
        stmt = stmt.order_by(jobs_table.c.create_time.desc(), jobs_table.c.job_id.desc()).limit(page_size + 1)
        with self.engine.connect() as conn:
            rows = [self._row(r) for r in conn.execute(stmt).all()]
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = encode_page_token(rows[-1].create_time, rows[-1].job_id) if more and rows else ""
        return rows, token


def encode_page_token(create_time: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([create_time, job_id]).encode()).decode()


def decode_page_token(token: str) -> tuple[float, str]:
    try:
        t, jid = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(t), str(jid)
    except (ValueError, TypeError) as e:
        raise PageTokenError(f"not a page token from ListDatasetJobs ({type(e).__name__})") from None


__all__ = [
    "ACTIVE",
    "CANCELLED",
    "CANCELLING",
    "FAILED",
    "FINAL",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "JobRow",
    "JobStore",
    "PageTokenError",
]
