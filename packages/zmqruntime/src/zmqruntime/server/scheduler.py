"""Every decision the server makes, without any I/O: the server's state machine.

`ExecutionScheduler` holds the lifecycle, the compile artifacts, the per-execution event
sequence and progress caches, and which executions occupy which executor slots. Its inputs are
requests (`submit`, `cancel`, `status_of`, `begin_shutdown`), executor news (`next_dispatch`,
`worker_started`, `progress`, `finish`, `lost`) and the clock (`tick`). Its outputs are return
values and *effects* (`Publish`, `KillWorker`) that the I/O layer drains and carries out in
order. Being synchronous and free of sockets, it can be driven step by step by a Hypothesis
state machine that checks every record change against `LEGAL_TRANSITIONS`.

Slots: at most `slots` attempts are in flight on the executor, which may be more than it has
workers (the server prefetches a few, so a worker finds its next job waiting instead of idling
for a round trip). Dispatching an attempt does not start its execution: the record stays
`queued`, at its queue position, until the attempt's worker reports `worker_started` (the
server's own workers are not asked to: the server reports the start itself when it hands the
attempt to an idle worker); only then is it `running` (with `started_at` and `worker_pid` in
the same record). An outcome or a pool
breakage that arrives before that report (lost, or still on its way) moves the record through
`running` to its end state in one step, publishing only the end. A slot is held until the
executor reports on the attempt (its result, or the pool breaking), even if the execution was
cancelled meanwhile: its worker may be busy with it, and a cancelled attempt that has not
started still sits in the executor's queue until a worker takes it and sees the notice.
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
    #: The last status reply built, reused while its record and `seq` are still current.
    snapshot: StatusReply | None = None


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
        #: Executions whose `running` record is still to be published (ordered).
        self._starting: dict[str, None] = {}
        #: When set, taking the effects leaves `running` events pending: the I/O layer
        #: publishes them itself a little later (`publish_started`), so a short execution
        #: whose end comes first publishes only its end.
        self.defer_starts = False
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
        """Effects produced since the last `drain`, without taking them (pending `running`
        events included unless `defer_starts`, see `publish_started`)."""
        if not self.defer_starts:
            self.publish_started()
        return tuple(self._effects)

    def drain(self) -> list[Effect]:
        """Effects produced since the last call, in the order they must be carried out
        (pending `running` events included unless `defer_starts`, see `publish_started`)."""
        if not self.defer_starts:
            self.publish_started()
        effects, self._effects = self._effects, []
        return effects

    @property
    def starts_pending(self) -> bool:
        """True while some execution's `running` event is held back (see `publish_started`)."""
        return bool(self._starting)

    def publish_started(self) -> None:
        """Publish the `running` records of executions started since the last call.

        `worker_started` holds its event back (until the effects are taken, or with
        `defer_starts` until this is called), so an attempt whose end is learnt first
        publishes the end alone: one event and one `seq` instead of two. A progress report
        publishes its execution's start before itself, and a status reply of it does too.
        """
        if not self._starting:
            return
        starting, self._starting = self._starting, {}
        for execution_id in starting:
            record = self.lifecycle.get(execution_id)
            if record is not None and record.status is ExecutionStatus.RUNNING:
                self._publish_record(record)

    def _publish_record(self, record: ExecutionRecord) -> None:
        self._starting.pop(record.execution_id, None)  # this record supersedes that event
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
        if execution_id in self._starting:
            self.publish_started()  # a reply never shows a state whose event is unpublished
        record = self._known(execution_id)
        track = self._tracks.get(execution_id) or _Track()
        # Every change of the progress caches bumps `seq`; a record can change without it
        # (a restarted attempt's pid), hence the identity check. Pollers ask again and again.
        cached = track.snapshot
        if cached is not None and cached.execution is record and cached.seq == track.seq:
            return cached
        track.snapshot = StatusReply(
            execution=record,
            latest_progress=track.latest,
            axes=tuple(track.axes.values()),
            seq=track.seq,
        )
        return track.snapshot

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
            # Running, or dispatched and not yet started: the worker checks the notice before
            # it starts the handler; the slot stays held until the executor reports.
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

        Everything still queued is cancelled, whether dispatched to the executor or not.
        Graceful: running executions (including ones waiting to restart after a pool breakage)
        go on to their end. Forced: they are cancelled too and their workers ended (a
        dispatched attempt whose worker has not reported yet is ended when it does).
        """
        self.accepting = False
        cancelled: list[str] = []
        message = "server shutting down" + (" (forced)" if force else "")
        for record in self.lifecycle.queued():
            if self._cancel(record.execution_id, _error(ErrorCode.CANCELLED, message), force=force):
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
        """`(execution_id, attempt)` of every attempt on the executor (started or still
        queued there), in dispatch order."""
        return list(self._inflight.items())

    # -- the executor side ----------------------------------------------------------------

    def next_dispatch(self) -> Dispatch | None:
        """The next attempt to submit, if a slot is free and work is waiting; else None.

        Executions restarting after a pool breakage go first, in their original order; then
        the queue in FIFO order, skipping what is already dispatched (never while shutting
        down); amortised O(1). The record stays `queued` until `worker_started`. Dispatching
        an execution whose compile artifact expired meanwhile fails it with `artifact_missing`.
        """
        while len(self._inflight) < self.slots:
            if self._restart:
                execution_id = self._restart.popleft()
            elif self.accepting and (head := self.lifecycle.take_next()) is not None:
                execution_id = head
                if not self._load_artifact(execution_id):
                    continue
            else:
                return None
            record = self.lifecycle.get(execution_id)
            job = self._jobs.get(execution_id)
            if record is None or job is None or record.status.is_terminal:
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

    def _load_artifact(self, execution_id: str) -> bool:
        """Give a job its compile artifact; False (and the execution failed) if it expired."""
        record = self.lifecycle.get(execution_id)
        if record is None or execution_id not in self._jobs:
            return False
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

    def worker_started(self, execution_id: str, pid: int, attempt: int | None = None) -> None:
        """A worker reports it began running this execution's attempt in process `pid`.

        A queued record becomes `running` with its pid (one record, one event, published when
        the effects are next taken: see `publish_started`); a running one (restarted after a
        pool breakage) gets the new pid; a cancelled one whose cancel was forced gets its
        worker ended. A report naming another `attempt` than the one in flight is stale.
        """
        job = self._jobs.get(execution_id)
        in_flight = self._inflight.get(execution_id)
        if job is None or in_flight is None or attempt not in (None, in_flight):
            self.counters.progress_dropped += 1
            return
        job.reports_seen += 1
        job.pid = pid
        record = self.lifecycle.get(execution_id)
        if record is not None and record.status is ExecutionStatus.QUEUED:
            if self.lifecycle.start(execution_id, worker_pid=pid) is not None:
                self._starting[execution_id] = None
        else:
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
        if execution_id in self._starting:
            self._publish_record(record)  # subscribers learn of the start before its progress
        track = self._tracks.setdefault(execution_id, _Track())
        track.seq += 1
        stamped = update.with_seq(track.seq)
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

    def _through_running(self, execution_id: str, pid: int | None = None) -> None:
        """Make a live record `running` (with `pid`, if known) without publishing it: its end
        state follows in the same step and only that is published. A record still `queued`
        is started now: its worker's `worker_started` report was lost or is still on its way,
        or the attempt never reached a worker."""
        record = self.lifecycle.get(execution_id)
        if record is None:
            return
        if record.status is ExecutionStatus.QUEUED:
            self.lifecycle.start(execution_id, worker_pid=pid)
        elif pid is not None:
            self.lifecycle.set_worker(execution_id, pid)

    def finish(self, execution_id: str, attempt: int, outcome: JobOutcome) -> None:
        """The executor returned this attempt's outcome; record it unless already terminal.

        A record still `queued` (its worker's report not handled) goes through `running` to
        its end state; one event is published.
        """
        if self._settle(execution_id, attempt) is None:
            return
        self._jobs.pop(execution_id, None)
        self._through_running(execution_id)
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

    def _fail(self, execution_id: str, error: ErrorInfo, pid: int | None = None) -> None:
        """Fail an execution, through `running` if it is still queued (one event)."""
        self._through_running(execution_id, pid)
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
        were only caught in the breakage: they are dispatched again first, in their original
        order, and one caught `max_losses` times fails too. Only an attempt that had started
        (record `running`) counts as caught. One that never started (record still `queued`:
        no worker reported it) did not run, so it restarts for free, provided the breakage is
        explained: the known worker of a lost attempt is among the dead (its handler crashed
        it, or a forced cancel ended it; the attempt may be cancelled meanwhile). An
        unexplained breakage (no dead worker, or only ones nobody is known to have used)
        counts against every lost attempt: a handler that ends its process before its
        `worker_started` report gets out may be any of them, and a pool that keeps breaking
        must not be restarted forever.

        A dead pid nobody claims is attributed only when that is unambiguous: to the one
        attempt restarted after an earlier breakage whose new worker has not reported (record
        `running`, pid unknown), if there is exactly one; if there is none, to the only
        attempt in flight at all. Among several dispatched attempts without reports it cannot
        be told which one ran in the dead process: none is blamed (unexplained, see above).
        """
        in_flight = len(self._inflight)
        claimed: set[int] = set()  # workers known to run a lost attempt, cancelled or not
        settled: list[tuple[str, _Job, bool]] = []
        for execution_id, attempt in attempts:
            known = self._jobs.get(execution_id)
            if self._inflight.get(execution_id) == attempt and known and known.pid is not None:
                claimed.add(known.pid)
            job = self._settle(execution_id, attempt)
            if job is not None:
                record = self.lifecycle.get(execution_id)
                started = record is not None and record.status is ExecutionStatus.RUNNING
                settled.append((execution_id, job, started))
        unclaimed = sorted(pid for pid in dead if pid not in claimed)
        suspects = [job for _, job, started in settled if started and job.pid is None]
        if not suspects and in_flight == 1:
            suspects = [job for _, job, _ in settled if job.pid is None]
        if len(suspects) == 1 and len(unclaimed) == 1:
            suspects[0].pid = unclaimed[0]
            claimed.add(unclaimed[0])
        explained = any(pid in dead for pid in claimed)
        for execution_id, job, started in settled:
            if job.pid is not None and job.pid in dead:
                self._jobs.pop(execution_id, None)
                self._fail(
                    execution_id,
                    _error(
                        ErrorCode.WORKER_LOST,
                        f"worker process {job.pid} {dead[job.pid]} while running "
                        f"execution {execution_id}",
                    ),
                    pid=job.pid,
                )
                continue
            if started or not explained:
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
