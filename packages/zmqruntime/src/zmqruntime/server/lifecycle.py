"""Execution records and the only code that changes them.

Every record is a frozen `ExecutionRecord`; a change replaces it whole, so status, result,
error and timestamps are always seen together (never a `complete` record without its result).
A change is applied only if `LEGAL_TRANSITIONS` allows it: terminal states are sticky, and a
refused transition is logged and leaves the record as it was. The queue of waiting executions
lives here too, so queue positions always agree with the records. A queued execution can be
*taken* for dispatch (`take_next`): it stays `queued` and keeps its place in the queue
(positions count it) until a worker starts it (`start`) or it is cancelled, and is never taken
twice; the untaken part of the queue is kept apart so the next one is found in O(1). Memory is
bounded: beyond `max_records` the oldest terminal records are evicted (their ids are reported
so caches keyed by execution can be dropped too), and `is_full` tells the caller to refuse new
work when every record is still live.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from zmqruntime.execution_status import LEGAL_TRANSITIONS, ExecutionStatus
from zmqruntime.messages import ErrorInfo, ExecutionRecord
from zmqruntime.unique_ids import UniqueIds

__all__ = ["Lifecycle"]

log = logging.getLogger(__name__)


class Lifecycle:
    """Records by execution id, the FIFO queue, and guarded transitions between states."""

    def __init__(
        self, *, max_records: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records!r}")
        self.max_records = max_records
        self._clock = clock
        self._records: dict[str, ExecutionRecord] = {}
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._untaken: OrderedDict[str, None] = OrderedDict()
        self._running: OrderedDict[str, None] = OrderedDict()
        self._terminal: OrderedDict[str, None] = OrderedDict()
        self._evicted: list[str] = []
        self._ids = UniqueIds()  # a prefix of this run's own: no id of a restored record

    # -- reading ------------------------------------------------------------------------------

    def get(self, execution_id: str) -> ExecutionRecord | None:
        """The current record, or None if unknown (never submitted, or evicted)."""
        return self._records.get(execution_id)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ExecutionRecord]:
        return iter(list(self._records.values()))

    def queued(self) -> list[ExecutionRecord]:
        """Queued records in FIFO order (position 1 first)."""
        return [self._records[eid] for eid in self._queue]

    def running(self) -> list[ExecutionRecord]:
        """Running records in the order they started."""
        return [self._records[eid] for eid in self._running]

    def queue_position(self, execution_id: str) -> int | None:
        """1-based position in the queue, or None if not queued."""
        for position, eid in enumerate(self._queue, start=1):
            if eid == execution_id:
                return position
        return None

    @property
    def queue_length(self) -> int:
        """How many executions wait; a record just submitted is at this (1-based) position."""
        return len(self._queue)

    def next_queued(self) -> str | None:
        """The id at the head of the queue (taken or not), without removing it."""
        return next(iter(self._queue), None)

    def is_taken(self, execution_id: str) -> bool:
        """True for a queued execution already taken for dispatch (see `take_next`)."""
        return execution_id in self._queue and execution_id not in self._untaken

    @property
    def live_count(self) -> int:
        """Records not yet terminal (queued or running)."""
        return len(self._queue) + len(self._running)

    @property
    def is_full(self) -> bool:
        """True when a new record could not be stored without evicting a live one."""
        return self.live_count >= self.max_records

    def drain_evicted(self) -> list[str]:
        """Ids evicted since the last call (so caches keyed by them can be dropped)."""
        evicted, self._evicted = self._evicted, []
        return evicted

    # -- changing -----------------------------------------------------------------------------

    def submit(
        self,
        *,
        handler: str,
        label: str | None = None,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
    ) -> ExecutionRecord:
        """Create a `queued` record at the back of the queue. Check `is_full` first."""
        if self.is_full:
            raise RuntimeError("lifecycle is full: every record is still queued or running")
        execution_id = self._ids()
        record = ExecutionRecord(
            execution_id=execution_id,
            handler=handler,
            label=label,
            status=ExecutionStatus.QUEUED,
            compile_only=compile_only,
            compile_artifact_id=compile_artifact_id,
            submitted_at=self._clock(),
            started_at=None,
            finished_at=None,
            worker_pid=None,
            result=None,
            error=None,
        )
        self._records[execution_id] = record
        self._queue[execution_id] = None
        self._untaken[execution_id] = None
        self._evict()
        return record

    def take_next(self) -> str | None:
        """The oldest queued execution not yet taken for dispatch, now marked taken; O(1).

        Not a status change: the record stays `queued` at its queue position until `start`
        (its worker began) or `cancel`. None when every queued execution is already taken.
        """
        if not self._untaken:
            return None
        execution_id, _ = self._untaken.popitem(last=False)
        return execution_id

    def restore(self, record: ExecutionRecord) -> None:
        """Put back a finished record of a previous run (from the journal), as the newest."""
        if not record.status.is_terminal:
            raise ValueError(f"only a finished record can be restored, not a {record.status} one")
        self._records[record.execution_id] = record
        self._terminal.pop(record.execution_id, None)
        self._terminal[record.execution_id] = None
        self._evict()

    def start(self, execution_id: str, worker_pid: int | None = None) -> ExecutionRecord | None:
        """`queued → running`, leaving the queue: `started_at` is now and `worker_pid` the
        process that runs it (None if unknown), in one replacement."""
        return self._transition(
            execution_id,
            ExecutionStatus.RUNNING,
            started_at=self._clock(),
            worker_pid=worker_pid,
        )

    def complete(self, execution_id: str, result: Any) -> ExecutionRecord | None:
        """`running → complete` with its result, in one replacement."""
        return self._transition(execution_id, ExecutionStatus.COMPLETE, result=result)

    def fail(self, execution_id: str, error: ErrorInfo) -> ExecutionRecord | None:
        """`running → failed` with its error, in one replacement."""
        return self._transition(execution_id, ExecutionStatus.FAILED, error=error)

    def cancel(self, execution_id: str, error: ErrorInfo) -> ExecutionRecord | None:
        """`queued|running → cancelled` with its error; a queued one leaves the queue."""
        return self._transition(execution_id, ExecutionStatus.CANCELLED, error=error)

    def set_worker(self, execution_id: str, pid: int | None) -> ExecutionRecord | None:
        """Record which worker process runs a running execution (not a status change)."""
        record = self._records.get(execution_id)
        if record is None or record.status is not ExecutionStatus.RUNNING:
            return None
        if record.worker_pid == pid:
            return record
        updated = attrs.evolve(record, worker_pid=pid)
        self._records[execution_id] = updated
        return updated

    def _transition(
        self, execution_id: str, target: ExecutionStatus, **changes: Any
    ) -> ExecutionRecord | None:
        record = self._records.get(execution_id)
        if record is None:
            log.info("refused %s for unknown execution %s", target.value, execution_id)
            return None
        current = ExecutionStatus(record.status)
        if target not in LEGAL_TRANSITIONS[current]:
            log.info(
                "refused transition %s -> %s for execution %s",
                current.value,
                target.value,
                execution_id,
            )
            return None
        if target.is_terminal:
            changes["finished_at"] = self._clock()
        updated = attrs.evolve(record, status=target, **changes)
        self._records[execution_id] = updated
        self._queue.pop(execution_id, None)
        self._untaken.pop(execution_id, None)
        if target is ExecutionStatus.RUNNING:
            self._running[execution_id] = None
        else:
            self._running.pop(execution_id, None)
        if target.is_terminal:
            self._terminal[execution_id] = None
            self._evict()
        return updated

    def _evict(self) -> None:
        while len(self._records) > self.max_records and self._terminal:
            execution_id, _ = self._terminal.popitem(last=False)
            del self._records[execution_id]
            self._evicted.append(execution_id)
