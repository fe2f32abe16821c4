"""A SQLite journal of execution records and compile artifacts, so a restart loses no answer.

The server hands every record it is about to publish (each status change) to
`ExecutionJournal.record`, which keeps the newest version per execution in memory, and then
calls `flush`, which writes them in one transaction, before the change becomes visible (event
or reply): what a client saw survives. A burst of changes handled together costs one commit;
progress updates are not journalled. SQLite runs in WAL mode with `synchronous=NORMAL`: a
committed transaction survives the server process being killed (not necessarily a power cut).

At start, `recover` reads the previous run's records: finished ones come back as they were
(results included, numpy arrays too), and ones that were queued or running come back `failed`
with error code `server_restarted` (their work died with the old process). Compile artifacts'
metadata (id, expiry) is journalled so the new run can say that an artifact was lost in a
restart rather than that it never existed. Only stdlib `sqlite3` and JSON: nothing is pickled.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from zmqruntime.arrays import extract_arrays, read_array, restore_arrays
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.json_types import strict_json_loads
from zmqruntime.messages import ErrorCode, ErrorInfo, ExecutionRecord

__all__ = ["ExecutionJournal", "Recovered"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    server_epoch TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_update ON executions (updated_at);
CREATE TABLE IF NOT EXISTS arrays (
    execution_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    header TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (execution_id, position)
);
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id TEXT PRIMARY KEY,
    server_epoch TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


@attrs.frozen(kw_only=True)
class Recovered:
    """What a new run learns from the journal: the previous runs' records (oldest first,
    unfinished ones already turned `failed`) and the ids of artifacts that were still live."""

    records: tuple[ExecutionRecord, ...]
    lost_artifacts: frozenset[str]


def restarted(record: ExecutionRecord, now: float) -> ExecutionRecord:
    """A queued or running record of a previous run, ended `failed` by the restart."""
    was = "running" if record.status is ExecutionStatus.RUNNING else "queued"
    error = ErrorInfo(
        code=ErrorCode.SERVER_RESTARTED,
        message=f"server restarted: the execution was {was} when its server process ended",
    )
    return attrs.evolve(
        record, status=ExecutionStatus.FAILED, finished_at=now, result=None, error=error
    )


class ExecutionJournal:
    """Execution records and artifact metadata in a SQLite file (WAL mode).

    One journal per server, used from the server's event loop only. `max_records` bounds the
    file: at each recovery only the newest records are kept.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, server_epoch: str, max_records: int = 10_000
    ) -> None:
        self.path = Path(path)
        self.server_epoch = server_epoch
        self.max_records = max_records
        self._pending: dict[str, ExecutionRecord] = {}
        self._pending_artifacts: dict[str, tuple[float, float]] = {}
        self.commits = 0
        self.rows_written = 0
        self.seconds_writing = 0.0
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # -- writing --------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True when changes wait for `flush`."""
        return bool(self._pending or self._pending_artifacts)

    def record(self, record: ExecutionRecord) -> None:
        """Remember the newest version of a record until the next flush (cheap: no I/O)."""
        self._pending[record.execution_id] = record

    def artifact(self, artifact_id: str, ttl: float) -> None:
        """Remember that a compile artifact was stored, expiring `ttl` seconds from now."""
        now = time.time()
        self._pending_artifacts[artifact_id] = (now, now + ttl)

    def flush(self) -> None:
        """Write every pending change in one transaction."""
        if not self.dirty:
            return
        started = time.perf_counter()
        records, self._pending = list(self._pending.values()), {}
        artifacts, self._pending_artifacts = self._pending_artifacts, {}
        rows: list[tuple[str, str, str, str, float]] = []
        arrays: list[tuple[str, int, str, bytes]] = []
        for record in records:
            value, headers, frames = extract_arrays(record.to_wire())
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
            rows.append((record.execution_id, self.server_epoch, record.status, text, time.time()))
            for position, (header, frame) in enumerate(zip(headers, frames, strict=True)):
                arrays.append((record.execution_id, position, json.dumps(header), bytes(frame)))
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO executions VALUES (?, ?, ?, ?, ?)", rows)
            self._db.executemany(
                "DELETE FROM arrays WHERE execution_id = ?", [(r[0],) for r in rows]
            )
            self._db.executemany("INSERT INTO arrays VALUES (?, ?, ?, ?)", arrays)
            self._db.executemany(
                "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)",
                [(aid, self.server_epoch, c, e) for aid, (c, e) in artifacts.items()],
            )
        self.commits += 1
        self.rows_written += len(rows)
        self.seconds_writing += time.perf_counter() - started

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Flush and close the database."""
        try:
            self.flush()
        finally:
            self._db.close()

    # -- reading --------------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read the previous runs' records and end the unfinished ones (written back at once).

        Keeps the newest `max_records` records and drops older rows and expired artifacts.
        """
        now = time.time()
        with self._transaction():
            self._db.execute(
                "DELETE FROM executions WHERE execution_id NOT IN (SELECT execution_id FROM "
                "executions ORDER BY updated_at DESC LIMIT ?)",
                (self.max_records,),
            )
            self._db.execute(
                "DELETE FROM arrays WHERE execution_id NOT IN (SELECT execution_id FROM executions)"
            )
            self._db.execute("DELETE FROM artifacts WHERE expires_at <= ?", (now,))
        rows = self._db.execute(
            "SELECT execution_id, record FROM executions ORDER BY updated_at"
        ).fetchall()
        records: list[ExecutionRecord] = []
        for execution_id, text in rows:
            record = self._load(execution_id, text)
            if record is None:
                continue
            if not record.status.is_terminal:
                record = restarted(record, now)
                self.record(record)
            records.append(record)
        lost = {
            artifact_id for (artifact_id,) in self._db.execute("SELECT artifact_id FROM artifacts")
        }
        self.flush()
        return Recovered(records=tuple(records), lost_artifacts=frozenset(lost))

    def _load(self, execution_id: str, text: str) -> ExecutionRecord | None:
        """One stored record (arrays restored), or None if the row cannot be read back."""
        try:
            value = strict_json_loads(text)
            stored = self._db.execute(
                "SELECT header, data FROM arrays WHERE execution_id = ? ORDER BY position",
                (execution_id,),
            ).fetchall()
            arrays = [read_array(json.loads(h), d) for h, d in stored]
            if arrays:
                value = restore_arrays(value, arrays)
            return ExecutionRecord.from_wire(value)
        except ValueError:  # SchemaError is a ValueError
            return None

    def stored_ids(self) -> Iterable[str]:
        """Ids of every journalled execution (for tests and tools)."""
        return [eid for (eid,) in self._db.execute("SELECT execution_id FROM executions")]


class _Transaction:
    """`BEGIN` … `COMMIT` (or `ROLLBACK` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
