"""The review app's state in SQL (SQLAlchemy Core; SQLite by default, PostgreSQL by URL): one-time
invitations, people, the label-review audit trail and decisions, model confidences fetched from the
gateway, reader studies, their items and the readers' answers.

The dataset's own files stay the truth for labels (corrections are written back into them); this
database is the truth for who did what, when, and what the value was before.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from services.sqlengine import make_engine

ADMIN, REVIEWER, READER = "admin", "reviewer", "reader"
ROLES = (ADMIN, REVIEWER, READER)
ACCEPT, CORRECT, REJECT = "accept", "correct", "reject"
ACTIONS = (ACCEPT, CORRECT, REJECT)

_md = sa.MetaData()
invites = sa.Table(
    "review_invites",
    _md,
    sa.Column("token_sha256", sa.String(64), primary_key=True),  # the token itself is never stored
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("study_id", sa.String(32), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("user_id", sa.String(32), nullable=True),
)
users = sa.Table(
    "review_users",
    _md,
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("study_id", sa.String(32), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
events = sa.Table(
    "review_events",
    _md,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("seconds", sa.Float, nullable=True),  # time on the image before the decision
    sa.Column("previous_json", sa.Text, nullable=False),
    sa.Column("record_json", sa.Text, nullable=False),
)
confidences = sa.Table(
    "review_confidences",
    _md,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.String(400), primary_key=True),
    sa.Column("p_big_left", sa.Float, nullable=False),
    sa.Column("p_big_right", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
)
studies = sa.Table(
    "review_studies",
    _md,
    sa.Column("study_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("real_root", sa.Text, nullable=False),
    sa.Column("synthetic_root", sa.Text, nullable=False),
    sa.Column("images", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
study_images = sa.Table(
    "review_study_images",
    _md,
    sa.Column("study_id", sa.String(32), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("png", sa.LargeBinary, nullable=False),  # rendered once: every request costs the same
)
study_items = sa.Table(
    "review_study_items",
    _md,
    sa.Column("study_id", sa.String(32), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("truth", sa.String(16), nullable=False),
)
answers = sa.Table(
    "review_answers",
    _md,
    sa.Column("study_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("said", sa.String(16), nullable=True),
    sa.Column("confidence", sa.Integer, nullable=True),
    sa.Column("served_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float, nullable=True),
)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    role: str
    study_id: str | None = None


@dataclass(frozen=True)
class Event:
    job_id: str
    file_name: str
    action: str
    reviewer: str
    at: float
    seconds: float | None
    previous: dict[str, Any]
    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "file_name": self.file_name,
            "action": self.action,
            "reviewer": self.reviewer,
            "at": self.at,
            "seconds": self.seconds,
            "previous": self.previous,
            "record": self.record,
        }


@dataclass(frozen=True)
class Study:
    study_id: str
    name: str
    real_root: str
    synthetic_root: str
    images: int
    seed: int
    created_by: str
    created_at: float


@dataclass
class ReviewStore:
    """Thread-safe (a pooled connection per call)."""

    url: str
    engine: sa.Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        _md.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- invitations and people ------------------------------------------------------------------------
    def invite(
        self, role: str, name: str, *, created_by: str, ttl_s: float, study_id: str | None = None
    ) -> str:
        """A new one-time token for ``role``; only its digest is stored, so a leaked database does not
        leak working links."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role == READER and not study_id:
            raise ValueError("a reader invitation names its study")
        token = secrets.token_urlsafe(24)
        now = time.time()
        with self.engine.begin() as c:
            c.execute(
                invites.insert().values(
                    token_sha256=token_digest(token),
                    role=role,
                    name=name.strip() or role,
                    study_id=study_id,
                    created_by=created_by,
                    created_at=now,
                    expires_at=now + ttl_s,
                )
            )
        return token

    def redeem(self, token: str) -> User | None:
        """The person a token admits, once: the conditional update makes a second use (even a
        concurrent one) fail. ``None`` for an unknown, used or expired token."""
        digest, now = token_digest(token), time.time()
        user_id = uuid.uuid4().hex
        with self.engine.begin() as c:
            row = c.execute(sa.select(invites).where(invites.c.token_sha256 == digest)).mappings().first()
            if row is None or row["used_at"] is not None or row["expires_at"] < now:
                return None
            done = c.execute(
                invites.update()
                .where(invites.c.token_sha256 == digest, invites.c.used_at.is_(None))
                .values(used_at=now, user_id=user_id)
            )
            if done.rowcount != 1:
                return None
            user = User(user_id, row["name"], row["role"], row["study_id"])
            c.execute(
                users.insert().values(
                    user_id=user_id, name=user.name, role=user.role, study_id=user.study_id, created_at=now
                )
            )
        return user

    def user(self, user_id: str) -> User | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(users).where(users.c.user_id == user_id)).mappings().first()
        return None if row is None else User(row["user_id"], row["name"], row["role"], row["study_id"])

    def study_readers(self, study_id: str) -> list[User]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(users).where(users.c.study_id == study_id).order_by(users.c.created_at)
            ).mappings()
            return [User(r["user_id"], r["name"], r["role"], r["study_id"]) for r in rows]

    def open_invites(self, study_id: str) -> int:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(sa.func.count())
                .select_from(invites)
                .where(invites.c.study_id == study_id, invites.c.used_at.is_(None))
            ).scalar_one()

    # -- label review ----------------------------------------------------------------------------------
    def add_event(self, event: Event) -> None:
        with self.engine.begin() as c:
            c.execute(
                events.insert().values(
                    job_id=event.job_id,
                    file_name=event.file_name,
                    action=event.action,
                    reviewer=event.reviewer,
                    at=event.at,
                    seconds=event.seconds,
                    previous_json=json.dumps(event.previous),
                    record_json=json.dumps(event.record),
                )
            )

    def events(self, job_id: str, file_name: str | None = None) -> list[Event]:
        q = sa.select(events).where(events.c.job_id == job_id)
        if file_name is not None:
            q = q.where(events.c.file_name == file_name)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(events.c.event_id)).mappings().all()
        return [
            Event(
                r["job_id"],
                r["file_name"],
                r["action"],
                r["reviewer"],
                r["at"],
                r["seconds"],
                json.loads(r["previous_json"]),
                json.loads(r["record_json"]),
            )
            for r in rows
        ]

    def decisions(self, job_id: str) -> dict[str, str]:
        """The latest action per image of a job (two columns, not the records: the list view asks often)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(events.c.file_name, events.c.action)
                .where(events.c.job_id == job_id)
                .order_by(events.c.event_id)
            )
            return {name: action for name, action in rows}

    def put_confidences(self, job_id: str, rows: list[tuple[str, float, float]], model: str) -> None:
        with self.engine.begin() as c:
            for name, p_left, p_right in rows:
                c.execute(
                    confidences.delete().where(
                        confidences.c.job_id == job_id, confidences.c.file_name == name
                    )
                )
                c.execute(
                    confidences.insert().values(
                        job_id=job_id, file_name=name, p_big_left=p_left, p_big_right=p_right, model=model
                    )
                )

    def confidences(self, job_id: str) -> dict[str, tuple[float, float]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(confidences).where(confidences.c.job_id == job_id)).mappings()
            return {r["file_name"]: (r["p_big_left"], r["p_big_right"]) for r in rows}

    # -- reader studies --------------------------------------------------------------------------------
    def create_study(self, study: Study, items: list[tuple[str, int, str, str]], pngs: list[bytes]) -> None:
        """``items``: (item_id, position, source, truth); ``pngs``: what readers see, in the same order."""
        with self.engine.begin() as c:
            c.execute(studies.insert().values(**study.__dict__))
            c.execute(
                study_items.insert(),
                [
                    {"study_id": study.study_id, "item_id": i, "position": p, "source": s, "truth": t}
                    for i, p, s, t in items
                ],
            )
            c.execute(
                study_images.insert(),
                [
                    {"study_id": study.study_id, "item_id": it[0], "png": png}
                    for it, png in zip(items, pngs, strict=True)
                ],
            )

    def study_image(self, study_id: str, item_id: str) -> bytes | None:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(study_images.c.png).where(
                    study_images.c.study_id == study_id, study_images.c.item_id == item_id
                )
            ).scalar_one_or_none()

    def study(self, study_id: str) -> Study | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(studies).where(studies.c.study_id == study_id)).mappings().first()
        return None if row is None else Study(**row)

    def studies(self) -> list[Study]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(studies).order_by(studies.c.created_at.desc())).mappings().all()
        return [Study(**r) for r in rows]

    def study_items(self, study_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(study_items)
                .where(study_items.c.study_id == study_id)
                .order_by(study_items.c.position)
            ).mappings()
            return [dict(r) for r in rows]

    def serve(self, study_id: str, user_id: str, item_id: str) -> None:
        """Note when an item was first shown to a reader (the answer's time counts from here)."""
        with self.engine.begin() as c:
            seen = c.execute(
                sa.select(answers.c.item_id).where(
                    answers.c.study_id == study_id, answers.c.user_id == user_id, answers.c.item_id == item_id
                )
            ).first()
            if seen is None:
                c.execute(
                    answers.insert().values(
                        study_id=study_id, user_id=user_id, item_id=item_id, served_at=time.time()
                    )
                )

    def answer(self, study_id: str, user_id: str, item_id: str, said: str, confidence: int) -> bool:
        """Record an answer once; ``False`` when the item was never served or is already answered."""
        with self.engine.begin() as c:
            done = c.execute(
                answers.update()
                .where(
                    answers.c.study_id == study_id,
                    answers.c.user_id == user_id,
                    answers.c.item_id == item_id,
                    answers.c.answered_at.is_(None),
                )
                .values(said=said, confidence=confidence, answered_at=time.time())
            )
            return done.rowcount == 1

    def answers(self, study_id: str) -> list[dict[str, Any]]:
        """Every answered item with its reader's name and the truth."""
        q = (
            sa.select(
                answers.c.user_id,
                users.c.name,
                answers.c.item_id,
                study_items.c.truth,
                answers.c.said,
                answers.c.confidence,
                answers.c.served_at,
                answers.c.answered_at,
            )
            .join(users, users.c.user_id == answers.c.user_id)
            .join(
                study_items,
                sa.and_(
                    study_items.c.study_id == answers.c.study_id, study_items.c.item_id == answers.c.item_id
                ),
            )
            .where(answers.c.study_id == study_id, answers.c.answered_at.is_not(None))
            .order_by(answers.c.answered_at)
        )
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def answered_items(self, study_id: str, user_id: str) -> set[str]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(answers.c.item_id).where(
                    answers.c.study_id == study_id,
                    answers.c.user_id == user_id,
                    answers.c.answered_at.is_not(None),
                )
            )
            return {r[0] for r in rows}
