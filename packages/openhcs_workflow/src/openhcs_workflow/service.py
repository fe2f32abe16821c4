"""`BatchWorkflowService`: compile and run batches of plates, converging every plate once.

Everything the service does happens on one asyncio loop, the one its first batch runs on:
plate records change only there (single writer), and every host callback leaves it through
`host.dispatcher`. The flows:

- `compile_plates`: reset → plates `compile_pending` → one `CompileJob` per plate → submit all,
  wait all (not fail-fast) → each plate `compiled` or `compile_failed` → one summary line.
- `run_plates`: reset → plates `queued` at once → compile every plate (reusing a compile-only
  artifact when the job's signature is unchanged and the server still has it) → submit each
  execution with its `compile_artifact_id` → follow each with an `ExecutionStatusPoller`
  woken by the event stream → `completed | failed | cancelled`.

Every end of a plate, whatever caused it (poller outcome, stop, submission rejection, compile
failure, server loss, an exception), goes through `_settle`, which accepts one outcome per plate
and batch; the batch ends (`on_all_plates_completed`, once) when its last plate settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from openhcs_workflow.backend import (
    BackendEvent,
    BackendUnavailable,
    ExecutionNotFound,
    ExecutionUpdate,
    PipelineHandlers,
    SubmissionRejected,
    WorkflowBackend,
)
from openhcs_workflow.batch import (
    BatchBusyError,
    BatchKind,
    BatchLedger,
    BatchReport,
    CompileFailurePolicy,
    PlateOutcome,
    PlateSpec,
)
from openhcs_workflow.batch_reset import progress_batch_reset
from openhcs_workflow.compile_job import CompileJob
from openhcs_workflow.config_resolver import PlateConfigSources
from openhcs_workflow.host import Host
from openhcs_workflow.plate_record import CompiledPlate
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.status_presenter import ExecutionServerStatusPresenter
from openhcs_workflow.workflow_state import Activity, WorkflowState, WorkflowView
from reactive_services.dispatch import DispatcherClosedError, ImmediateDispatcher
from reactive_services.poller_drivers import AsyncioPollerDriver
from reactive_services.snapshot_policy import CallbackIntervalSnapshotPollerPolicy
from reactive_services.snapshot_poller import IntervalSnapshotPoller
from zmqruntime.engines import (
    BatchSubmitWaitEngine,
    CallbackBatchSubmitWaitPolicy,
    CallbackExecutionStatusPollPolicy,
    ExecutionStatusPoller,
    PollOutcome,
    PollOutcomeKind,
)
from zmqruntime.execution_status import ExecutionStatus

__all__ = ["BatchWorkflowService"]

log = logging.getLogger(__name__)

#: Events of executions whose submission reply has not arrived yet are kept this long (at most).
_ORPHAN_LIMIT = 10_000


#: How many gracefully cancelled executions a later force stop can still reach.
_STOPPED_SOFTLY_KEPT = 4096


class _Settled(Exception):
    """Internal: the plate already has its outcome, so this step of it does not run."""


class _Batch:
    """One running batch: its ledger plus what the flows need to steer it."""

    def __init__(self, ledger: BatchLedger, specs: Sequence[PlateSpec]) -> None:
        self.ledger = ledger
        self.specs = tuple(specs)
        self.jobs: dict[str, CompileJob] = {}
        self.artifacts: dict[str, str] = {}  # plate -> artifact id, for plates ready to run
        self.reused: dict[str, str] = {}  # plate -> artifact id reused from an earlier compile
        self.inflight: dict[
            str, str
        ] = {}  # plate -> server execution (compile or run) followed now
        self.stop_level = 0  # 0 running, 1 graceful stop asked, 2 force stop asked
        self.aborted: str | None = None  # why the run was aborted (compile failure policy)
        self.closing = False  # shutdown() is ending the batch
        self.task: asyncio.Task[BatchReport] | None = None

    @property
    def kind(self) -> BatchKind:
        return self.ledger.kind

    def unsettled(self, plate_id: str) -> bool:
        return not self.ledger.is_settled(plate_id)


def _isolated(call: Callable[[], object]) -> None:
    """Run one host callback; its exception is logged, never fed back into the workflow."""
    try:
        call()
    except Exception:
        log.exception("host callback %r raised", call)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a number of seconds > 0, got {value!r}")
    return float(value)


def _error_record(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    error = payload.get("error")
    return error if isinstance(error, Mapping) else None


def _error_message(payload: Mapping[str, Any], fallback: str) -> str:
    error = _error_record(payload)
    if error is not None:
        code, message = error.get("code"), error.get("message")
        if isinstance(message, str) and message:
            return f"{message} ({code})" if isinstance(code, str) and code else message
    return fallback


def _lost_reason(text: str) -> str:
    return text if text.startswith("server lost") else f"server lost: {text}"


def _describe(error: Exception) -> str:
    """A one-line reason for a submission or poll that raised."""
    if isinstance(error, SubmissionRejected):
        return f"submission rejected: {error.code}: {error.message}"
    if isinstance(error, BackendUnavailable):
        return _lost_reason(str(error) or "server unavailable")
    return f"{type(error).__name__}: {error}"


class BatchWorkflowService:
    """Compile-only and run batches for one host; see the module docstring.

    `host` must subclass `Host` (TypeError otherwise); `backend` is the execution server
    boundary. `configs` supplies the global default and saved per-plate configs
    (`PlateConfigSources`); each `PlateSpec` may add an override. `liveness_timeout` bounds
    how long a silent server is waited for before its plates end `failed` ("server lost");
    `poll_interval` is the status poll pause when no event wakes a poller;
    `queue_poll_interval` the refresh of queue positions while a run is active;
    `refresh_interval` the coalescing delay of progress-driven list and status refreshes.
    """

    def __init__(
        self,
        host: Host,
        backend: WorkflowBackend,
        *,
        handlers: PipelineHandlers | None = None,
        configs: PlateConfigSources | None = None,
        compile_failure_policy: CompileFailurePolicy | str = CompileFailurePolicy.ABORT,
        liveness_timeout: float = 30.0,
        poll_interval: float = 1.0,
        queue_poll_interval: float = 1.0,
        refresh_interval: float = 1 / 30,
    ) -> None:
        if not isinstance(host, Host):
            raise TypeError(
                f"host: expected a subclass of openhcs_workflow.Host, got "
                f"{type(host).__qualname__} (the host contract is nominal: subclass Host)"
            )
        if not isinstance(backend, WorkflowBackend):
            raise TypeError(
                f"backend: expected a WorkflowBackend, got {type(backend).__qualname__}"
            )
        try:
            self._failure_policy = CompileFailurePolicy(compile_failure_policy)
        except ValueError:
            options = ", ".join(repr(p.value) for p in CompileFailurePolicy)
            raise ValueError(
                f"compile_failure_policy: expected one of {options}, got {compile_failure_policy!r}"
            ) from None
        self._host = host
        self._backend = backend
        self._handlers = handlers if handlers is not None else PipelineHandlers()
        self.configs = configs if configs is not None else PlateConfigSources()
        self._liveness_timeout = _positive("liveness_timeout", liveness_timeout)
        self._poll_interval = _positive("poll_interval", poll_interval)
        self._queue_poll_interval = _positive("queue_poll_interval", queue_poll_interval)
        self._refresh_interval = _positive("refresh_interval", refresh_interval)
        self._state = WorkflowState()
        self._presenter = ExecutionServerStatusPresenter()
        self.view = WorkflowView(self._state, self._presenter)
        self._engine = BatchSubmitWaitEngine()
        self._status_poller = ExecutionStatusPoller(clock=backend.signals.clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batches: dict[int, _Batch] = {}
        self._plate_batch: dict[str, _Batch] = {}
        self._next_batch_id = 1
        self._pump: asyncio.Task[None] | None = None
        self._queue_poller: IntervalSnapshotPoller[dict[str, int]] | None = None
        self._queue_driver: AsyncioPollerDriver | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Executions a graceful stop cancelled: their handlers may still hold workers after the
        # batch ended, so the next stop forces them (the Stop button's second click).
        self._stopped_softly: OrderedDict[str, None] = OrderedDict()
        self._orphans: OrderedDict[str, list[BackendEvent]] = OrderedDict()
        self._orphan_count = 0
        self._submitting = 0
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._list_dirty = False
        self._closed = False

    # -- public API -----------------------------------------------------------------------

    @property
    def host(self) -> Host:
        return self._host

    @property
    def backend(self) -> WorkflowBackend:
        return self._backend

    @property
    def compile_failure_policy(self) -> CompileFailurePolicy:
        return self._failure_policy

    async def compile_plates(self, plates: Iterable[PlateSpec]) -> BatchReport:
        """Compile-only batch; returns when every plate is `compiled`, `compile_failed` or
        `cancelled`. Raises `BatchBusyError` (after `emit_error`) if a plate is in a batch."""
        batch = self._admit(BatchKind.COMPILE, plates)
        return await self._drive(batch, self._compile_flow)

    async def run_plates(self, plates: Iterable[PlateSpec]) -> BatchReport:
        """Run batch; returns when every plate is `completed`, `failed` or `cancelled` (after
        `on_all_plates_completed`). Raises `BatchBusyError` (after `emit_error`) if a plate
        is already in a batch."""
        batch = self._admit(BatchKind.RUN, plates)
        return await self._drive(batch, self._run_flow)

    async def stop(self, force: bool = False) -> None:
        """Stop this service's batches (never other clients' executions).

        The first call cancels gracefully: plates not yet on the server end `cancelled` at
        once, executions on the server are asked to cancel and their plates end with what the
        server reports (`cancelled`, or `completed` if they finished first). A second call, or
        `force=True`, cancels them hard, also when the batch already ended (a handler that
        ignores cancellation keeps its worker until forced). Returns once the cancel requests
        were answered.
        """
        self._enter()
        cancels: list[tuple[str, bool]] = []
        for batch in list(self._batches.values()):
            level = 2 if force or batch.stop_level > 0 else 1
            if level <= batch.stop_level:
                continue
            batch.stop_level = level
            for plate_id in batch.ledger.unsettled():
                if plate_id not in batch.inflight:
                    self._settle(batch, plate_id, PlateState.CANCELLED, reason="stopped")
            cancels.extend((eid, level == 2) for eid in batch.inflight.values())
        if force or not self._batches:
            listed = {eid for eid, _ in cancels}
            cancels.extend((eid, True) for eid in self._stopped_softly if eid not in listed)
            self._stopped_softly.clear()
        for eid, hard in cancels:
            if not hard:
                self._stopped_softly[eid] = None
        while len(self._stopped_softly) > _STOPPED_SOFTLY_KEPT:
            self._stopped_softly.popitem(last=False)
        if not cancels and not self._batches:
            return
        self._publish_activity()
        self._call(self._host.update_button_states)
        if cancels:
            hard = any(f for _, f in cancels)
            self._message(
                f"{'Force stopping' if hard else 'Stopping'} {len(cancels)} execution(s)..."
            )
            await asyncio.gather(*(self._cancel_quietly(eid, force=f) for eid, f in cancels))

    async def shutdown(self) -> None:
        """End every running batch (`cancelled`, after asking the server to cancel its
        executions), stop the event pump and the queue poller. Idempotent; the service
        refuses new batches afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._loop is None:
            return
        self._check_loop()
        tasks = []
        for batch in list(self._batches.values()):
            batch.closing = True
            self._abandon(batch, PlateState.CANCELLED, "service shut down")  # + server cancels
            if batch.task is not None and not batch.task.done():
                batch.task.cancel()
                tasks.append(batch.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stop_queue_driver()
        if self._queue_poller is not None:
            self._queue_poller.close()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._background:  # the cancel requests, bounded like any wait for the server
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._liveness_timeout):
                    await asyncio.gather(*self._background, return_exceptions=True)
        if self._refresh_handle is not None:
            self._refresh_handle.cancel()
            self._refresh_handle = None
        self._refresh()

    async def begin_init(self, plate_ids: Iterable[str]) -> None:
        """Mark plates `init_pending` (`⏳ Init`) while the host initialises them."""
        self._enter()
        for plate_id in self._idle_plates(plate_ids, "initialise"):
            self._set_state(plate_id, PlateState.INIT_PENDING)
        self._changed(list_now=True)

    async def end_init(self, plate_id: str, *, error: str | None = None) -> None:
        """A plate's initialisation ended: `ready`, or back to `created` with `error`."""
        self._enter()
        for plate in self._idle_plates([plate_id], "finish initialising"):
            state = PlateState.CREATED if error else PlateState.READY
            self._set_state(plate, state, error=error)
        self._changed(list_now=True)

    async def invalidate_compiled(self, plate_id: str) -> None:
        """The plate's pipeline or config was edited: drop its compile artifact and show it
        `ready` again (a later run recompiles it; signatures would refuse reuse anyway)."""
        self._enter()
        for plate in self._idle_plates([plate_id], "invalidate"):
            record = self._state.record(plate)
            state = PlateState.READY if record.state is PlateState.COMPILED else record.state
            self._set_state(plate, state, compiled=None)
        self._changed(list_now=True)

    # -- admission and the batch driver --------------------------------------------------

    def _enter(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop on first use; refuse any other loop, and a closed service."""
        if self._closed:
            raise RuntimeError("BatchWorkflowService is shut down; create a new one")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._pump = self._loop.create_task(self._consume_events(), name="workflow-events")
            self._queue_poller = IntervalSnapshotPoller(
                CallbackIntervalSnapshotPollerPolicy(
                    fetch_snapshot_fn=self._fetch_queue_positions,
                    poll_interval_seconds_value=self._queue_poll_interval,
                    clone_snapshot_fn=dict,
                    on_snapshot_changed_fn=self._on_queue_positions,
                ),
                dispatcher=ImmediateDispatcher(),
                clock=self._loop.time,
            )
        return self._check_loop()

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError(
                "BatchWorkflowService is bound to the event loop of its first batch; call it "
                "there (from other threads use BlockingBatchWorkflowService or "
                "asyncio.run_coroutine_threadsafe)"
            )
        return loop

    def _idle_plates(self, plate_ids: Iterable[str], action: str) -> list[str]:
        ids = [plate_ids] if isinstance(plate_ids, str) else list(plate_ids)
        busy = [p for p in ids if p in self._plate_batch]
        if busy:
            message = f"Cannot {action} plate(s) in a running batch: {', '.join(busy)}"
            self._error(message)
            raise BatchBusyError(message, busy)
        return ids

    def _admit(self, kind: BatchKind, plates: Iterable[PlateSpec]) -> _Batch:
        self._enter()
        specs = list(plates)
        if not specs:
            raise ValueError("plates: expected at least one PlateSpec, got none")
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            if not isinstance(spec, PlateSpec):
                raise TypeError(f"plates[{i}]: expected a PlateSpec, got {spec!r}")
            if spec.plate_id in seen:
                raise ValueError(f"plates[{i}].plate_id: duplicate plate {spec.plate_id!r}")
            seen.add(spec.plate_id)
        ids = tuple(spec.plate_id for spec in specs)
        busy = [p for p in ids if p in self._plate_batch]
        if busy:
            message = (
                f"Cannot start {kind.value}: plate(s) already in a running batch: {', '.join(busy)}"
            )
            self._error(message)
            raise BatchBusyError(message, busy)
        batch = _Batch(BatchLedger(self._next_batch_id, kind, ids), specs)
        self._next_batch_id += 1
        self._batches[batch.ledger.batch_id] = batch
        for plate_id in ids:
            self._plate_batch[plate_id] = batch
        pollers = [self._queue_poller] if kind is BatchKind.RUN and self._queue_poller else []
        progress_batch_reset(self._state, ids, pollers=pollers)
        start = PlateState.COMPILE_PENDING if kind is BatchKind.COMPILE else PlateState.QUEUED
        for plate_id in ids:
            self._set_state(plate_id, start, batch_id=batch.ledger.batch_id)
        self._publish_activity()
        self._changed(list_now=True)
        self._call(self._host.emit_progress_started, len(ids))
        self._call(self._host.update_button_states)
        if kind is BatchKind.RUN:
            self._message(f"Compiling {len(ids)} plate(s) before execution...")
            self._start_queue_driver()
        else:
            self._message(f"Compiling {len(ids)} plate(s)...")
        return batch

    async def _drive(
        self, batch: _Batch, flow: Callable[[_Batch], Coroutine[Any, Any, None]]
    ) -> BatchReport:
        loop = self._check_loop()
        task = loop.create_task(
            self._guarded(batch, flow), name=f"workflow-{batch.kind}-{batch.ledger.batch_id}"
        )
        batch.task = task
        return await task

    async def _guarded(
        self, batch: _Batch, flow: Callable[[_Batch], Coroutine[Any, Any, None]]
    ) -> BatchReport:
        """Run a flow; whatever happens, every plate of the batch is settled at the end."""
        try:
            await flow(batch)
        except asyncio.CancelledError:
            self._abandon(batch, PlateState.CANCELLED, "cancelled")
            task = asyncio.current_task()
            if not (batch.closing and task is not None and task.uncancel() == 0):
                raise
        except Exception as exc:
            log.exception("%s batch %d failed", batch.kind, batch.ledger.batch_id)
            self._error(f"{batch.kind.value.capitalize()} failed: {exc!r}")
            self._abandon(batch, PlateState.FAILED, f"internal error: {exc!r}")
        else:
            self._abandon(batch, PlateState.FAILED, "internal error: the plate was never settled")
        return batch.ledger.report()

    def _abandon(self, batch: _Batch, state: PlateState, reason: str) -> None:
        """Settle every unsettled plate with `state`; cancel its server execution, if any."""
        if batch.kind is BatchKind.COMPILE and state is PlateState.FAILED:
            state = PlateState.COMPILE_FAILED
        for plate_id in batch.ledger.unsettled():
            execution_id = batch.inflight.get(plate_id)
            if execution_id is not None:
                self._spawn(self._cancel_quietly(execution_id))
            self._settle(batch, plate_id, state, reason=reason)

    # -- the flows ------------------------------------------------------------------------

    async def _compile_flow(self, batch: _Batch) -> None:
        await self._compile_all(batch, self._build_jobs(batch))

    async def _run_flow(self, batch: _Batch) -> None:
        await self._compile_all(batch, self._build_jobs(batch))
        runnable = [p for p in batch.ledger.plates if p in batch.artifacts and batch.unsettled(p)]
        if runnable:
            self._message(f"Compilation complete. Submitting {len(runnable)} plate(s)...")
            await self._execute_all(batch, runnable)

    def _build_jobs(self, batch: _Batch) -> list[CompileJob]:
        """One job per plate from its live pipeline and resolved config; bad input fails it."""
        jobs: list[CompileJob] = []
        for spec in batch.specs:
            try:
                if not spec.pipeline:
                    raise ValueError("pipeline: no steps")
                config = self.configs.resolve(spec.plate_id, spec.config_override)
                job = CompileJob(plate_id=spec.plate_id, pipeline=spec.pipeline, config=config)
            except ValueError as exc:
                self._compile_failed(batch, spec.plate_id, f"invalid input: {exc}", genuine=True)
                continue
            batch.jobs[spec.plate_id] = job
            jobs.append(job)
        return jobs

    async def _compile_all(self, batch: _Batch, jobs: list[CompileJob]) -> None:
        """Compile (or reuse) every job: submit all in order, then wait all concurrently."""
        if not jobs:
            return

        async def submit(job: CompileJob) -> str:
            plate_id = job.plate_id
            if not batch.unsettled(plate_id):
                raise _Settled(plate_id)
            reusable = await self._reusable_artifact(job)
            if reusable is not None:
                batch.reused[plate_id] = reusable
                return reusable
            try:
                execution_id = await self._submit(
                    batch,
                    plate_id,
                    self._handlers.compile,
                    job.params(),
                    compile_only=True,
                )
            except _Settled:
                raise
            except Exception as exc:
                genuine = not isinstance(exc, BackendUnavailable)
                self._compile_failed(batch, plate_id, _describe(exc), genuine=genuine)
                raise
            return execution_id

        async def wait(execution_id: str, job: CompileJob) -> None:
            if batch.reused.get(job.plate_id) == execution_id:
                self._compiled(batch, job, execution_id)
                return
            outcome = await self._follow(execution_id)
            batch.inflight.pop(job.plate_id, None)
            if outcome.kind is PollOutcomeKind.COMPLETE:
                self._compiled(batch, job, execution_id)
            else:
                self._compile_outcome_failed(batch, job.plate_id, outcome)

        policy: CallbackBatchSubmitWaitPolicy[CompileJob] = CallbackBatchSubmitWaitPolicy(
            submit_fn=submit,
            wait_fn=wait,
            job_key_fn=lambda job: job.plate_id,
            fail_fast_submit_value=False,
            fail_fast_wait_value=False,
        )
        await self._engine.run(jobs, policy)

    async def _execute_all(self, batch: _Batch, plates: list[str]) -> None:
        """Submit every compiled plate's execution in order, then follow all concurrently."""

        async def submit(plate_id: str) -> str:
            if not batch.unsettled(plate_id):
                raise _Settled(plate_id)
            try:
                return await self._submit(
                    batch,
                    plate_id,
                    self._handlers.execute,
                    {"plate_id": plate_id},
                    compile_artifact_id=batch.artifacts[plate_id],
                    bind=True,
                )
            except _Settled:
                raise
            except Exception as exc:
                self._settle(batch, plate_id, PlateState.FAILED, reason=_describe(exc))
                raise

        async def wait(execution_id: str, plate_id: str) -> None:
            outcome = await self._follow(
                execution_id,
                on_running=lambda eid: self._mark_running(batch, plate_id, eid),
            )
            batch.inflight.pop(plate_id, None)
            self._execution_ended(batch, plate_id, execution_id, outcome)

        policy: CallbackBatchSubmitWaitPolicy[str] = CallbackBatchSubmitWaitPolicy(
            submit_fn=submit,
            wait_fn=wait,
            job_key_fn=lambda plate_id: plate_id,
            fail_fast_submit_value=False,
            fail_fast_wait_value=False,
        )
        await self._engine.run(plates, policy)

    async def _submit(
        self,
        batch: _Batch,
        plate_id: str,
        handler: str,
        params: Mapping[str, Any],
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        bind: bool = False,
    ) -> str:
        """Submit one execution for a plate and make it the plate's in-flight execution.

        Events that arrive before the submission reply are kept and replayed once the id is
        known. If the plate settled while the request was in flight (a stop), the new execution
        is cancelled at once and `_Settled` raised.
        """
        self._submitting += 1
        try:
            submission = await self._backend.submit(
                handler,
                params,
                compile_only=compile_only,
                compile_artifact_id=compile_artifact_id,
                label=plate_id,
            )
            execution_id = submission.execution_id
            if not batch.unsettled(plate_id):
                self._spawn(self._cancel_quietly(execution_id, force=batch.stop_level > 1))
                raise _Settled(plate_id)
            batch.inflight[plate_id] = execution_id
            if bind:
                self._state.bind_execution(plate_id, execution_id)
                self._state.update(
                    plate_id, execution_id=execution_id, queue_position=submission.queue_position
                )
                self._changed(list_now=True)
                for event in self._orphans.pop(execution_id, ()):
                    self._on_event(event)
            if batch.stop_level:
                self._spawn(self._cancel_quietly(execution_id, force=batch.stop_level > 1))
            return execution_id
        finally:
            self._submitting -= 1
            if not self._submitting:
                self._orphans.clear()
                self._orphan_count = 0

    async def _reusable_artifact(self, job: CompileJob) -> str | None:
        compiled = self._state.record(job.plate_id).compiled
        if compiled is None or compiled.signature != job.signature:
            return None
        try:
            available = await self._backend.artifact_available(compiled.artifact_id)
        except Exception as exc:
            log.info("could not check artifact %s: %r", compiled.artifact_id, exc)
            return None
        return compiled.artifact_id if available else None

    async def _follow(
        self, execution_id: str, *, on_running: Callable[[str], None] | None = None
    ) -> PollOutcome:
        policy = CallbackExecutionStatusPollPolicy(
            poll_status_fn=self._backend.status,
            poll_interval_seconds_value=self._poll_interval,
            liveness_timeout_seconds_value=self._liveness_timeout,
            on_running_fn=on_running,
            on_poll_exception_fn=lambda _eid, error: not isinstance(error, ExecutionNotFound),
        )
        return await self._status_poller.run(execution_id, policy, signals=self._backend.signals)

    # -- plate outcomes -------------------------------------------------------------------

    def _compiled(self, batch: _Batch, job: CompileJob, artifact_id: str) -> None:
        plate_id = job.plate_id
        if not batch.unsettled(plate_id):
            return
        compiled = CompiledPlate(artifact_id=artifact_id, job=job)
        if batch.kind is BatchKind.COMPILE:
            self._settle(
                batch, plate_id, PlateState.COMPILED, execution_id=artifact_id, compiled=compiled
            )
            return
        self._state.update(plate_id, compiled=compiled)
        if batch.stop_level or batch.aborted:
            self._settle(batch, plate_id, PlateState.CANCELLED, reason=self._not_run_reason(batch))
        else:
            batch.artifacts[plate_id] = artifact_id

    def _compile_outcome_failed(self, batch: _Batch, plate_id: str, outcome: PollOutcome) -> None:
        if outcome.kind is PollOutcomeKind.CANCELLED:
            reason = "stopped" if batch.stop_level else self._not_run_reason(batch)
            self._settle(batch, plate_id, PlateState.CANCELLED, reason=reason)
        elif outcome.kind is PollOutcomeKind.LOST or isinstance(outcome.error, ExecutionNotFound):
            self._compile_failed(batch, plate_id, _lost_reason(outcome.reason), genuine=False)
        else:
            reason = _error_message(outcome.payload, outcome.reason)
            self._compile_failed(
                batch, plate_id, reason, genuine=True, error=_error_record(outcome.payload)
            )

    def _not_run_reason(self, batch: _Batch) -> str:
        return f"not run: {batch.aborted}" if batch.aborted else "stopped"

    def _compile_failed(
        self,
        batch: _Batch,
        plate_id: str,
        reason: str,
        *,
        genuine: bool,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        """A plate's compile failed; `genuine` failures (not a lost server) may abort a run."""
        if not batch.unsettled(plate_id):
            return
        if batch.kind is BatchKind.COMPILE:
            self._settle(
                batch,
                plate_id,
                PlateState.COMPILE_FAILED,
                reason=reason,
                error=error,
                compiled=None,
            )
            return
        self._settle(
            batch, plate_id, PlateState.FAILED, reason=f"compile failed: {reason}", error=error
        )
        if genuine and self._failure_policy is CompileFailurePolicy.ABORT and not batch.aborted:
            self._abort(batch, f"{plate_id} failed to compile")

    def _abort(self, batch: _Batch, why: str) -> None:
        """Compile failure under the `abort` policy: nothing of this run executes."""
        batch.aborted = why
        for plate_id in batch.ledger.unsettled():
            execution_id = batch.inflight.get(plate_id)
            if execution_id is not None:
                self._spawn(self._cancel_quietly(execution_id))
            else:
                self._settle(batch, plate_id, PlateState.CANCELLED, reason=f"not run: {why}")

    def _execution_ended(
        self, batch: _Batch, plate_id: str, execution_id: str, outcome: PollOutcome
    ) -> None:
        if self._state.record(plate_id).execution_id != execution_id:
            return  # a stale execution of this plate: nothing to say about the plate now
        kind = outcome.kind
        payload = outcome.payload
        error = _error_record(payload)
        if kind is PollOutcomeKind.COMPLETE:
            self._settle(
                batch,
                plate_id,
                PlateState.COMPLETED,
                execution_id=execution_id,
                result=payload.get("result"),
            )
        elif kind is PollOutcomeKind.CANCELLED:
            reason = "stopped" if batch.stop_level else _error_message(payload, "cancelled")
            self._settle(
                batch, plate_id, PlateState.CANCELLED, execution_id=execution_id, reason=reason
            )
        elif kind is PollOutcomeKind.LOST or isinstance(outcome.error, ExecutionNotFound):
            self._settle(
                batch,
                plate_id,
                PlateState.FAILED,
                execution_id=execution_id,
                reason=_lost_reason(outcome.reason),
            )
        else:
            self._settle(
                batch,
                plate_id,
                PlateState.FAILED,
                execution_id=execution_id,
                reason=_error_message(payload, outcome.reason),
                error=error,
            )

    def _mark_running(self, batch: _Batch, plate_id: str, execution_id: str) -> None:
        """The plate's current execution started (a status poll, a record or progress event)."""
        if not batch.unsettled(plate_id):
            return
        record = self._state.record(plate_id)
        if record.execution_id != execution_id or record.state is not PlateState.QUEUED:
            return
        self._set_state(plate_id, PlateState.EXECUTING, queue_position=None)
        self._changed(list_now=True)

    def _settle(
        self,
        batch: _Batch,
        plate_id: str,
        state: PlateState,
        *,
        reason: str | None = None,
        execution_id: str | None = None,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        **record_changes: Any,
    ) -> bool:
        """THE terminal funnel: the plate's one outcome in this batch (later ones are ignored)."""
        if execution_id is None:
            execution_id = self._state.record(plate_id).execution_id
        outcome = PlateOutcome(
            plate_id=plate_id,
            state=state,
            execution_id=execution_id,
            reason=reason,
            result=result,
            error=error,
        )
        if not batch.ledger.settle(outcome):
            return False
        batch.inflight.pop(plate_id, None)
        self._state.unbind(plate_id)
        self._set_state(plate_id, state, error=reason, queue_position=None, **record_changes)
        if batch.kind is BatchKind.RUN:
            result_dict = outcome.to_result()
            self._call(self._host.emit_execution_complete, result_dict, plate_id)
            self._call(self._host.on_plate_completed, plate_id, state, result_dict)
        self._call(self._host.emit_progress_updated, batch.ledger.settled_count)
        self._changed(list_now=True)
        if batch.ledger.complete:
            self._end_batch(batch)
        return True

    def _end_batch(self, batch: _Batch) -> None:
        del self._batches[batch.ledger.batch_id]
        for plate_id in batch.ledger.plates:
            if self._plate_batch.get(plate_id) is batch:
                del self._plate_batch[plate_id]
        self._publish_activity()
        report = batch.ledger.report()
        self._message(report.summary())
        if batch.kind is BatchKind.COMPILE and report.failed:
            self._error(report.summary())
        failures = report.failure_summary()
        if failures is not None:
            self._error(failures)
        if batch.kind is BatchKind.RUN:
            self._call(
                self._host.on_all_plates_completed,
                report.completed,
                report.failed,
                report.cancelled,
            )
        self._call(self._host.emit_progress_finished)
        self._call(self._host.update_button_states)
        if not any(b.kind is BatchKind.RUN for b in self._batches.values()):
            self._spawn(self._stop_queue_driver())

    def _set_state(self, plate_id: str, state: PlateState, **changes: Any) -> None:
        before = self._state.record(plate_id).state
        self._state.update(plate_id, state=state, **changes)
        if state is not before or "batch_id" in changes:
            self._call(self._host.emit_orchestrator_state, plate_id, state)

    # -- events ---------------------------------------------------------------------------

    async def _consume_events(self) -> None:
        """The event pump: progress and record events, applied in arrival order."""
        try:
            async for event in self._backend.events():
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("could not apply event %r", event)
        except Exception:
            # Pollers still converge every plate (status polls and liveness do not need events).
            log.exception("the backend's event stream failed; continuing without events")

    def _on_event(self, event: BackendEvent) -> None:
        execution_id = event.execution_id
        plate_id = self._state.plate_of(execution_id)
        if plate_id is None:
            self._keep_orphan(event)
            return
        batch = self._plate_batch.get(plate_id)
        if isinstance(event, ExecutionUpdate):
            if batch is not None and event.status is ExecutionStatus.RUNNING:
                self._mark_running(batch, plate_id, execution_id)
            return
        if self._state.apply_progress(event) is None:
            return
        if batch is not None:
            self._mark_running(batch, plate_id, execution_id)
        self._changed()

    def _keep_orphan(self, event: BackendEvent) -> None:
        """Keep events of unknown executions while a submission reply may still name them."""
        if not self._submitting:
            return
        self._orphans.setdefault(event.execution_id, []).append(event)
        self._orphans.move_to_end(event.execution_id)
        self._orphan_count += 1
        while self._orphan_count > _ORPHAN_LIMIT and self._orphans:
            _, dropped = self._orphans.popitem(last=False)
            self._orphan_count -= len(dropped)

    # -- queue positions ------------------------------------------------------------------

    async def _fetch_queue_positions(self) -> dict[str, int]:
        return dict(await self._backend.queue_positions())

    def _on_queue_positions(self, positions: dict[str, int]) -> None:
        changed = False
        for batch in self._batches.values():
            for plate_id in batch.ledger.unsettled():
                record = self._state.record(plate_id)
                if record.state is PlateState.QUEUED and record.execution_id is not None:
                    position = positions.get(record.execution_id)
                    if position != record.queue_position:
                        self._state.update(plate_id, queue_position=position)
                        changed = True
        if changed:
            self._changed()

    def _start_queue_driver(self) -> None:
        if self._queue_driver is None and self._queue_poller is not None:
            self._queue_driver = AsyncioPollerDriver(
                self._queue_poller, max_sleep_seconds=self._queue_poll_interval
            )
            self._queue_driver.start()

    async def _stop_queue_driver(self) -> None:
        driver, self._queue_driver = self._queue_driver, None
        if driver is not None:
            await driver.aclose()

    # -- host calls, status line, refresh ------------------------------------------------

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        """Hand one host callback to the host's dispatcher (never run it here)."""
        try:
            self._host.dispatcher.dispatch(_isolated, functools.partial(fn, *args))
        except DispatcherClosedError as exc:
            log.warning("host dispatcher closed; dropped %s: %s", getattr(fn, "__name__", fn), exc)

    def _message(self, text: str) -> None:
        """A status message; it holds the line until the plate summary changes again."""
        self._flush_list()
        self._presenter.message_emitted()
        self._call(self._host.emit_status, text)

    def _error(self, text: str) -> None:
        self._call(self._host.emit_error, text)

    def _changed(self, *, list_now: bool = False) -> None:
        """Plate data changed: note the new summary; refresh the host now or coalesced."""
        self._presenter.observe(self._state.summary())
        self._list_dirty = True
        if list_now:
            self._refresh()
        elif self._refresh_handle is None and self._loop is not None:
            self._refresh_handle = self._loop.call_later(self._refresh_interval, self._refresh)

    def _flush_list(self) -> None:
        if self._list_dirty:
            self._list_dirty = False
            self._call(self._host.update_item_list)

    def _refresh(self) -> None:
        if self._refresh_handle is not None:
            self._refresh_handle.cancel()
            self._refresh_handle = None
        self._flush_list()
        text = self._presenter.take_text()
        if text is not None:
            self._call(self._host.emit_status, text)

    def _publish_activity(self) -> None:
        self._state.set_activity(
            Activity(
                busy_plates=frozenset(self._plate_batch),
                stopping=any(b.stop_level for b in self._batches.values()),
                batches=len(self._batches),
            )
        )

    # -- background tasks -----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._loop is None:
            coro.close()
            return
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_quietly(self, execution_id: str, *, force: bool = False) -> None:
        try:
            await self._backend.cancel(execution_id, force=force)
        except Exception as exc:
            log.warning("cancel of %s failed: %r", execution_id, exc)
