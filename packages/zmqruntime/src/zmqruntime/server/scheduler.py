"""Every decision the server makes, without any I/O: the server's state machine.

`ExecutionScheduler` holds the lifecycle, the compile artifacts, the per-execution event
sequence and progress caches, and which executions occupy which executor slots. Its inputs are
requests (`submit`, `cancel`, `status_of`, `begin_shutdown`), executor news (`next_dispatch`,
`worker_started`, `progress`, `finish`, `lost`) and the clock (`tick`). Its outputs are return
values and *effects* (`Publish`, `KillWorker`) that the I/O layer drains and carries out in
order. Being synchronous and free of sockets, it can be driven step by step by a Hypothesis
state machine that checks every record change against `LEGAL_TRANSITIONS`.

Slots: at most `slots` attempts are in flight on the executor. A slot is held until the
executor reports on the attempt (its result, or the pool breaking), even if the execution was
cancelled meanwhile: its worker is still busy, and counting it keeps queue positions exact.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    CancelNotice,
    CancelReply,
    ErrorCode,
    ErrorInfo,
    ExecutionEvent,
    ExecutionRecord,
    Heartbeat,
    QueuedExecution,
    RunningExecution,
    StatusReply,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.server.artifacts import ArtifactStore
from zmqruntime.server.counters import Counters
from zmqruntime.server.lifecycle import Lifecycle
from zmqruntime.server.worker_runtime import JobOutcome

__all__ = [
    "CANCEL_TOPIC",
    "HEARTBEAT_TOPIC",
    "Dispatch",
    "Effect",
    "ExecutionScheduler",
    "KillWorker",
    "Publish",
    "RequestRefused",
]

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC: Final = "__heartbeat__"
CANCEL_TOPIC: Final = "__cancel__"
#: Newest progress kept per axis of one execution; the least recently updated go first.
MAX_AXES_PER_EXECUTION: Final = 4096


class RequestRefused(Exception):
    """A request the server answers with an `error` reply (code, message, offending field)."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


@attrs.frozen
class Publish:
    """Publish `message` on the events channel under `topic`."""

    topic: str
    message: ProgressUpdate | ExecutionEvent | Heartbeat | CancelNotice


@attrs.frozen
class KillWorker:
    """End worker process `pid` at once (a forced cancel of `execution_id`)."""

    pid: int
    execution_id: str


Effect = Publish | KillWorker


@attrs.frozen(kw_only=True)
class Dispatch:
    """One attempt to run an execution, to be submitted to the executor."""

    execution_id: str
    attempt: int
    handler: str
    handler_ref: str
    params: dict[str, Any]
    artifact: Any
    compile_only: bool


@attrs.define
class _Job:
    """What the scheduler keeps about a live execution beyond its record."""

    params: dict[str, Any]
    artifact: Any = None
    pid: int | None = None
    reports_seen: int = 0
    losses: int = 0
    kill_when_started: bool = False


@attrs.define
class _Track:
    """The event sequence and progress caches of one execution (bounded)."""

    seq: int = 0
    latest: ProgressUpdate | None = None
    axes: OrderedDict[str, ProgressUpdate] = attrs.field(factory=OrderedDict)


def _error(code: ErrorCode, message: str, traceback: str | None = None) -> ErrorInfo:
    return ErrorInfo(code=code, message=message, traceback=traceback)


class ExecutionScheduler:
    """The server's state and decisions (see the module docstring)."""

    def __init__(
        self,
        handlers: Mapping[str, str],
        *,
        slots: int,
        max_records: int = 10_000,
        artifact_ttl: float = 1800.0,
        heartbeat_interval: float = 1.0,
        max_losses: int = 3,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots!r}")
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
        self.handlers = dict(handlers)
        self.slots = slots
        self.heartbeat_interval = heartbeat_interval
        self.max_losses = max_losses
        self.lifecycle = Lifecycle(max_records=max_records, clock=wall_clock)
        self.artifacts = ArtifactStore(ttl=artifact_ttl, clock=clock)
        self.counters = Counters()
        self._clock = clock
        self._started = clock()
        self._jobs: dict[str, _Job] = {}
        self._tracks: dict[str, _Track] = {}
        self._inflight: OrderedDict[str, int] = OrderedDict()
        self._restart: deque[str] = deque()
        self._cancel_pending: dict[str, bool] = {}
        self._attempts = 0
        self._heartbeat_seq = 0
        self._effects: list[Effect] = []
        self.accepting = True
        self.forced = False
        #: Compile artifacts that were live when a previous run of the server ended.
        self.lost_artifacts: frozenset[str] = frozenset()

    def restore(self, records: Iterable[ExecutionRecord], lost_artifacts: Iterable[str]) -> None:
        """Take back a previous run's finished records (from the journal), oldest first, and
        the ids of its artifacts, so `status` answers for them instead of `not_found`."""
        for record in records:
            self.lifecycle.restore(record)
        self._forget_evicted()
        self.lost_artifacts = frozenset(lost_artifacts)

    # -- effects --------------------------------------------------------------------------

    def pending_effects(self) -> tuple[Effect, ...]:
        """Effects produced since the last `drain`, without taking them."""
        return tuple(self._effects)

    def drain(self) -> list[Effect]:
        """Effects produced since the last call, in the order they must be carried out."""
        effects, self._effects = self._effects, []
        return effects

    def _publish_record(self, record: ExecutionRecord) -> None:
        track = self._tracks.setdefault(record.execution_id, _Track())
        track.seq += 1
        self._effects.append(
            Publish(record.execution_id, ExecutionEvent(record=record, seq=track.seq))
        )

    def _forget_evicted(self) -> None:
        for execution_id in self.lifecycle.drain_evicted():
            self._tracks.pop(execution_id, None)

    def uptime(self) -> float:
        """Seconds since the scheduler was created."""
        return max(0.0, self._clock() - self._started)

    # -- requests -------------------------------------------------------------------------

    def submit(self, request: Submit) -> SubmitReply:
        """Queue a new execution, or refuse with `RequestRefused`."""
        if not self.accepting:
            raise RequestRefused(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
        if request.handler not in self.handlers:
            known = ", ".join(sorted(self.handlers))
            raise RequestRefused(
                ErrorCode.UNKNOWN_HANDLER,
                f"no handler named {request.handler!r} (registered: {known})",
                "submit.handler",
            )
        artifact_id = request.compile_artifact_id
        if artifact_id is not None and artifact_id not in self.artifacts:
            why = (
                "was lost when the server restarted; compile again"
                if artifact_id in self.lost_artifacts
                else "is unknown or expired"
            )
            raise RequestRefused(
                ErrorCode.ARTIFACT_MISSING,
                f"compile artifact {artifact_id!r} {why}",
                "submit.compile_artifact_id",
            )
        if self.lifecycle.is_full:
            raise RequestRefused(
                ErrorCode.BUSY,
                f"{self.lifecycle.live_count} executions are queued or running, the limit",
            )
        record = self.lifecycle.submit(
            handler=request.handler,
            label=request.label,
            compile_only=request.compile_only,
            compile_artifact_id=artifact_id,
        )
        execution_id = record.execution_id
        self._jobs[execution_id] = _Job(params=request.params)
        self._tracks[execution_id] = _Track()
        self.counters.submitted += 1
        self._publish_record(record)
        self._forget_evicted()
        # Just submitted, so last in the queue (a scan would make batch submission O(n^2)).
        position = self.lifecycle.queue_length
        return SubmitReply(execution_id=execution_id, status=record.status, queue_position=position)

    def _known(self, execution_id: str) -> ExecutionRecord:
        record = self.lifecycle.get(execution_id)
        if record is None:
            raise RequestRefused(
                ErrorCode.NOT_FOUND, f"no execution {execution_id!r}", "execution_id"
            )
        return record

    def status_of(self, execution_id: str) -> StatusReply:
        """One execution's record, newest progress (overall and per axis) and last `seq`."""
        record = self._known(execution_id)
        track = self._tracks.get(execution_id) or _Track()
        return StatusReply(
            execution=record,
            latest_progress=track.latest,
            axes=tuple(track.axes.values()),
            seq=track.seq,
        )

    def cancel(self, execution_id: str, *, force: bool = False) -> CancelReply:
        """Cancel this execution only (see docs/protocol.md §5 `cancel`)."""
        record = self._known(execution_id)
        if record.status.is_terminal:
            if force and execution_id in self._cancel_pending:
                self._force_stop(execution_id)  # escalate an earlier cooperative cancel
            return CancelReply(execution_id=execution_id, status=record.status, changed=False)
        how = "cancelled by request" + (" (forced)" if force else "")
        changed = self._cancel(execution_id, _error(ErrorCode.CANCELLED, how), force=force)
        status = self._known(execution_id).status
        return CancelReply(execution_id=execution_id, status=status, changed=changed)

    def _cancel(self, execution_id: str, error: ErrorInfo, *, force: bool) -> bool:
        record = self.lifecycle.cancel(execution_id, error)
        if record is None:
            return False
        self._ended(record)
        if execution_id in self._inflight:
            self._cancel_pending[execution_id] = force
            self._effects.append(
                Publish(CANCEL_TOPIC, CancelNotice(execution_id=execution_id, force=force))
            )
            if force:
                self._force_stop(execution_id)
        else:
            # Queued, or waiting to restart after a pool breakage: it never runs again.
            if execution_id in self._restart:
                self._restart.remove(execution_id)
            self._jobs.pop(execution_id, None)
        return True

    def _force_stop(self, execution_id: str) -> None:
        self._cancel_pending[execution_id] = True
        job = self._jobs.get(execution_id)
        if job is None:
            return
        if job.pid is None:
            job.kill_when_started = True
        else:
            self._effects.append(KillWorker(job.pid, execution_id))

    def begin_shutdown(self, *, force: bool) -> list[str]:
        """Stop accepting work and cancel the queue (and, if forced, what runs); returns ids.

        Graceful: running executions (including ones waiting to restart after a pool breakage)
        go on to their end. Forced: they are cancelled too and their workers ended.
        """
        self.accepting = False
        cancelled: list[str] = []
        message = "server shutting down" + (" (forced)" if force else "")
        for record in self.lifecycle.queued():
            if self._cancel(record.execution_id, _error(ErrorCode.CANCELLED, message), force=False):
                cancelled.append(record.execution_id)
        if force:
            self.forced = True
            for record in self.lifecycle.running():
                if self._cancel(
                    record.execution_id, _error(ErrorCode.CANCELLED, message), force=True
                ):
                    cancelled.append(record.execution_id)
        return cancelled

    @property
    def drained(self) -> bool:
        """True once shutting down and nothing is in flight or waiting to restart."""
        return not self.accepting and not self._inflight and not self._restart

    # -- views for server_status ----------------------------------------------------------

    def running_entries(self) -> list[RunningExecution]:
        """Running executions, in the order they started."""
        return [
            RunningExecution(
                execution_id=r.execution_id,
                handler=r.handler,
                label=r.label,
                compile_only=r.compile_only,
                started_at=r.started_at if r.started_at is not None else r.submitted_at,
                worker_pid=r.worker_pid,
            )
            for r in self.lifecycle.running()
        ]

    def queued_entries(self) -> list[QueuedExecution]:
        """Queued executions with their 1-based positions."""
        return [
            QueuedExecution(
                execution_id=r.execution_id,
                handler=r.handler,
                label=r.label,
                compile_only=r.compile_only,
                queue_position=position,
            )
            for position, r in enumerate(self.lifecycle.queued(), start=1)
        ]

    def busy_workers(self) -> dict[int, str]:
        """Worker pid → the execution it is running (for attempts whose pid is known)."""
        busy: dict[int, str] = {}
        for execution_id in self._inflight:
            job = self._jobs.get(execution_id)
            if job is not None and job.pid is not None:
                busy[job.pid] = execution_id
        return busy

    def in_flight(self) -> list[tuple[str, int]]:
        """`(execution_id, attempt)` of every attempt on the executor, in dispatch order."""
        return list(self._inflight.items())

    # -- the executor side ----------------------------------------------------------------

    def next_dispatch(self) -> Dispatch | None:
        """The next attempt to submit, if a slot is free and work is waiting; else None.

        Executions restarting after a pool breakage go first, in their original order; then
        the queue in FIFO order (never while shutting down). Starting an execution whose
        compile artifact expired meanwhile fails it with `artifact_missing`.
        """
        while len(self._inflight) < self.slots:
            if self._restart:
                execution_id = self._restart.popleft()
            elif self.accepting and (head := self.lifecycle.next_queued()) is not None:
                execution_id = head
                if not self._start(execution_id):
                    continue
            else:
                return None
            record = self.lifecycle.get(execution_id)
            job = self._jobs.get(execution_id)
            if record is None or job is None or record.status is not ExecutionStatus.RUNNING:
                continue
            self._attempts += 1
            self._inflight[execution_id] = self._attempts
            job.pid = None
            job.reports_seen = 0
            return Dispatch(
                execution_id=execution_id,
                attempt=self._attempts,
                handler=record.handler,
                handler_ref=self.handlers[record.handler],
                params=job.params,
                artifact=job.artifact,
                compile_only=record.compile_only,
            )
        return None

    def _start(self, execution_id: str) -> bool:
        record = self.lifecycle.start(execution_id)
        if record is None:
            return False
        self._publish_record(record)
        artifact_id = record.compile_artifact_id
        if artifact_id is None:
            return True
        found, value = self.artifacts.get(artifact_id)
        if found:
            self._jobs[execution_id].artifact = value
            return True
        self._jobs.pop(execution_id, None)
        self._fail(
            execution_id,
            _error(
                ErrorCode.ARTIFACT_MISSING,
                f"compile artifact {artifact_id!r} expired before the execution started",
            ),
        )
        return False

    def worker_started(self, execution_id: str, pid: int) -> None:
        """A worker reports it began running this execution's handler."""
        job = self._jobs.get(execution_id)
        if job is None or execution_id not in self._inflight:
            self.counters.progress_dropped += 1
            return
        job.reports_seen += 1
        job.pid = pid
        self.lifecycle.set_worker(execution_id, pid)
        if job.kill_when_started:
            self._effects.append(KillWorker(pid, execution_id))

    def reports_seen(self, execution_id: str) -> int:
        """Reports (worker_started + progress) received for the execution's current attempt."""
        job = self._jobs.get(execution_id)
        return job.reports_seen if job is not None else 0

    def progress(self, update: ProgressUpdate) -> bool:
        """Stamp and publish a progress report of a running execution; False if dropped."""
        execution_id = update.execution_id
        job = self._jobs.get(execution_id)
        if job is not None and execution_id in self._inflight:
            job.reports_seen += 1
        record = self.lifecycle.get(execution_id)
        if record is None or record.status is not ExecutionStatus.RUNNING:
            self.counters.progress_dropped += 1
            return False
        track = self._tracks.setdefault(execution_id, _Track())
        track.seq += 1
        stamped = attrs.evolve(update, seq=track.seq)
        track.latest = stamped
        if stamped.axis_id:  # plate-level phases (empty axis) are not an axis of their own
            track.axes.pop(stamped.axis_id, None)
            track.axes[stamped.axis_id] = stamped
            while len(track.axes) > MAX_AXES_PER_EXECUTION:
                track.axes.popitem(last=False)
        self._effects.append(Publish(execution_id, stamped))
        return True

    def _settle(self, execution_id: str, attempt: int) -> _Job | None:
        """Free the attempt's slot; the job if the execution still awaits an outcome."""
        if self._inflight.get(execution_id) != attempt:
            log.info("ignored news of stale attempt %d of %s", attempt, execution_id)
            return None
        del self._inflight[execution_id]
        self._cancel_pending.pop(execution_id, None)
        record = self.lifecycle.get(execution_id)
        if record is None or record.status.is_terminal:
            self._jobs.pop(execution_id, None)
            log.info(
                "execution %s is already %s: its outcome is ignored",
                execution_id,
                record.status.value if record else "gone",
            )
            return None
        return self._jobs.get(execution_id)

    def finish(self, execution_id: str, attempt: int, outcome: JobOutcome) -> None:
        """The executor returned this attempt's outcome; record it unless already terminal."""
        if self._settle(execution_id, attempt) is None:
            return
        self._jobs.pop(execution_id, None)
        if outcome["kind"] == "complete":
            try:
                record = self.lifecycle.complete(execution_id, outcome["result"])
            except SchemaError as exc:
                message = f"the handler returned a value that is not JSON: {exc}"
                self._ended(
                    self.lifecycle.fail(execution_id, _error(ErrorCode.HANDLER_ERROR, message))
                )
                return
            if record is not None and record.compile_only:
                self.artifacts.put(execution_id, record.result)
            self._ended(record)
            return
        try:
            error = ErrorInfo.from_wire(outcome["error"] or {})
        except SchemaError as exc:
            error = _error(ErrorCode.INTERNAL, f"the worker sent an invalid error: {exc}")
        if outcome["kind"] == "cancelled":
            self._ended(self.lifecycle.cancel(execution_id, error))
        else:
            self._ended(self.lifecycle.fail(execution_id, error))

    def _fail(self, execution_id: str, error: ErrorInfo) -> None:
        self._ended(self.lifecycle.fail(execution_id, error))

    def _ended(self, record: ExecutionRecord | None) -> None:
        """Count and publish a record that just became terminal (None: the change was refused)."""
        if record is None:
            return
        if record.status is ExecutionStatus.COMPLETE:
            self.counters.completed += 1
        elif record.status is ExecutionStatus.FAILED:
            self.counters.failed += 1
        else:
            self.counters.cancelled += 1
        self._publish_record(record)
        self._forget_evicted()

    def lost(
        self, attempts: Iterable[tuple[str, int]], dead: Mapping[int, str], cause: str
    ) -> None:
        """The executor lost these attempts (its pool broke); `dead`: pid → how it died.

        An execution whose own worker is among the dead fails with `worker_lost`. The others
        were only caught in the breakage: they restart on the next pool, first and in order,
        unless they were already caught `max_losses` times (then they fail too).
        """
        settled: list[tuple[str, _Job]] = []
        for execution_id, attempt in attempts:
            job = self._settle(execution_id, attempt)
            if job is not None:
                settled.append((execution_id, job))
        # A worker can die before its worker_started report got out (a handler that ends its
        # process at once). If exactly one lost attempt has no known pid and some dead pid is
        # nobody's, that attempt ran there.
        claimed = {job.pid for _, job in settled if job.pid is not None}
        unclaimed = sorted(pid for pid in dead if pid not in claimed)
        anonymous = [job for _, job in settled if job.pid is None]
        if len(anonymous) == 1 and len(unclaimed) == 1:
            anonymous[0].pid = unclaimed[0]
        for execution_id, job in settled:
            if job.pid is not None and job.pid in dead:
                self._jobs.pop(execution_id, None)
                self._fail(
                    execution_id,
                    _error(
                        ErrorCode.WORKER_LOST,
                        f"worker process {job.pid} {dead[job.pid]} while running "
                        f"execution {execution_id}",
                    ),
                )
                continue
            job.losses += 1
            if job.losses >= self.max_losses:
                self._jobs.pop(execution_id, None)
                self._fail(
                    execution_id,
                    _error(
                        ErrorCode.WORKER_LOST,
                        f"the worker pool broke {job.losses} times while execution "
                        f"{execution_id} was on it (last: {cause})",
                    ),
                )
                continue
            job.pid = None
            self.lifecycle.set_worker(execution_id, None)
            self._restart.append(execution_id)

    def tick(self) -> None:
        """Heartbeat, re-publish pending cancellation notices, drop expired artifacts."""
        self._heartbeat_seq += 1
        self._effects.append(
            Publish(
                HEARTBEAT_TOPIC,
                Heartbeat(
                    seq=self._heartbeat_seq,
                    uptime=self.uptime(),
                    interval=self.heartbeat_interval,
                ),
            )
        )
        for execution_id, force in self._cancel_pending.items():
            self._effects.append(
                Publish(CANCEL_TOPIC, CancelNotice(execution_id=execution_id, force=force))
            )
        self.artifacts.sweep()
