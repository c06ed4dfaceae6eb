"""One way to open the SQL databases the gateway and the review app keep their state in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``, shared by the caller's threads. SQLite: the file's folder is created, the
    connection may cross threads, and WAL lets readers run beside the one writer."""
    kwargs: dict[str, Any] = {"future": True}
    sqlite = url.startswith("sqlite")
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)
    if sqlite:

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine
