"""A Hypothesis state machine driving the real BatchWorkflowService against a scripted server.

The machine scripts the server (submissions accepted or rejected, compiles ok or failing,
progress in any order and duplicated, completion, failure, cancellation honoured late, server
death and restart) and the user (new batches, stop, force stop, time passing) and checks the
invariants of DESIGN.md after every step:

1. every plate of a batch ends in exactly one terminal state; `on_plate_completed` once per
   plate and run; `on_all_plates_completed` once per run batch, counts adding up;
2. terminal is sticky: stale ids, duplicate or reordered events, late results change nothing;
3. a new batch starts from a clean progress view;
4. the progress projection is a function of the set of delivered events.

It also checks that every host callback ran on the dispatcher's thread and that the loop saw
no unhandled error. The machine owns its (virtual-time) event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from openhcs_workflow import (
    BatchBusyError,
    BatchKind,
    BatchReport,
    BatchWorkflowService,
    PlateProgressAccumulator,
    PlateRecord,
    PlateSpec,
    PlateState,
)
from openhcs_workflow.testing import (
    RecordingHost,
    ScriptedBackend,
    ScriptedExecution,
    VirtualTimeEventLoop,
)
from reactive_services.dispatch import AsyncioDispatcher
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.progress import ProgressUpdate

PLATES = ("A", "B", "C", "D")
LIVENESS = 4.0
POLL = 1.0
SETTLED = {
    BatchKind.RUN: frozenset({PlateState.COMPLETED, PlateState.FAILED, PlateState.CANCELLED}),
    BatchKind.COMPILE: frozenset(
        {PlateState.COMPILED, PlateState.COMPILE_FAILED, PlateState.CANCELLED}
    ),
}
PHASES = ("axis_started", "step_started", "pattern_group", "step_completed", "axis_completed")


@attrs.define
class Tracked:
    """A batch the machine started."""

    task: asyncio.Task[BatchReport]
    kind: BatchKind
    plates: tuple[str, ...]
    batch_id: int
    failures_at_start: int  # the machine's failure count at its start (-1: a failure pending)

    def report(self) -> BatchReport | None:
        return self.task.result() if self.task.done() and not self.task.cancelled() else None


def _specs(plates: list[str], steps: int) -> list[PlateSpec]:
    return [
        PlateSpec(plate_id=p, pipeline=[{"name": f"step{i}"} for i in range(steps)]) for p in plates
    ]


def _pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)] if items else None


class WorkflowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeEventLoop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.backend = ScriptedBackend(clock=self.loop.time, cancel_running_at_once=False)
        self.host = RecordingHost(AsyncioDispatcher(self.loop))
        self.service: BatchWorkflowService | None = None
        self.batches: list[Tracked] = []
        self.pending: list[ProgressUpdate] = []  # made, not yet delivered
        self.delivered: dict[str, list[ProgressUpdate]] = {}  # per execution id
        self.sticky: dict[tuple[str, int], PlateRecord] = {}
        self.epochs = 1
        self.disruptions = 0  # server deaths and restarts so far (one per run keeps it busy)
        self.stops = 0
        self.failures = 0  # things that may fail a plate: a handler error, a refusal, a dead server

    # -- helpers --------------------------------------------------------------------------

    @property
    def svc(self) -> BatchWorkflowService:
        assert self.service is not None
        return self.service

    def run(self, seconds: float = 0.001) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def current(
        self, status: ExecutionStatus, *, runs_only: bool = False
    ) -> list[ScriptedExecution]:
        if not self.backend.online:
            return []
        return [
            e
            for e in self.backend.executions.values()
            if e.status is status
            and e.epoch == self.backend.epoch
            and not (runs_only and e.compile_only)
        ]

    def deliver(self, event: ProgressUpdate) -> None:
        if self.backend.online:
            self.delivered.setdefault(event.execution_id, []).append(event)
        self.backend.deliver(event)

    # -- setup ----------------------------------------------------------------------------

    @initialize(policy=st.sampled_from(["abort", "run_compiled"]))
    def make_service(self, policy: str) -> None:
        self.service = BatchWorkflowService(
            self.host,
            self.backend,
            compile_failure_policy=policy,
            liveness_timeout=LIVENESS,
            poll_interval=POLL,
            queue_poll_interval=POLL,
        )

    # -- the user -------------------------------------------------------------------------

    @rule(
        kind=st.sampled_from([BatchKind.RUN, BatchKind.COMPILE]),
        plates=st.lists(st.sampled_from(PLATES), min_size=1, max_size=4, unique=True),
        steps=st.integers(1, 2),
        compile_now=st.sampled_from([True, True, False]),
    )
    def start_batch(
        self, kind: BatchKind, plates: list[str], steps: int, compile_now: bool
    ) -> None:
        busy = self.svc.view.busy_plates
        calm = self.backend.online and not self.backend.rejections
        failures = self.failures if calm else -1
        old_runs = {e.execution_id for e in self.backend.executions.values() if not e.compile_only}
        specs = _specs(plates, steps)
        start = self.svc.run_plates if kind is BatchKind.RUN else self.svc.compile_plates
        task = self.loop.create_task(start(specs))
        self.run()
        overlap = set(plates) & busy
        if overlap:
            assert task.done()
            error = task.exception()
            assert isinstance(error, BatchBusyError)
            assert set(error.plates) == overlap
            assert self.host.named("emit_error")[-1].args[0].startswith("Cannot start")
            return
        batch_id = self.svc.view.plate(plates[0]).batch_id  # type: ignore[union-attr]
        assert batch_id is not None
        for plate in plates:
            record = self.svc.view.plate(plate)
            assert record is not None
            assert record.batch_id == batch_id
            # Invariant 3: nothing of an earlier batch shows on the new batch's rows.
            assert record.progress is None
            assert record.execution_id is None or record.execution_id not in old_runs
            if record.state not in SETTLED[kind]:
                assert record.error is None
        self.batches.append(Tracked(task, kind, tuple(plates), batch_id, failures))
        if compile_now:  # the server compiles this batch's plates at once and starts them
            for execution in self.active():
                if execution.compile_only and execution.plate_id in plates:
                    self.step_execution(execution, ok=True)
                    self.step_execution(execution, ok=True)
            self.run()
            for execution in self.current(ExecutionStatus.QUEUED, runs_only=True):
                if execution.plate_id in plates:
                    self.backend.start(execution.execution_id)
            self.run()

    @precondition(lambda self: self.stops < 2 and self.svc.view.busy)
    @rule(force=st.booleans())
    def stop(self, force: bool) -> None:
        self.stops += 1
        self.loop.run_until_complete(self.svc.stop(force))
        self.run()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 5.0]), heartbeat=st.booleans())
    def time_passes(self, seconds: float, heartbeat: bool) -> None:
        if heartbeat:
            self.backend.heartbeat()
        self.run(seconds)

    # -- the server -----------------------------------------------------------------------

    def step_execution(self, execution: ScriptedExecution, ok: bool) -> None:
        """Move one execution one step on: start it, or end it as the script says."""
        eid = execution.execution_id
        if execution.status is ExecutionStatus.QUEUED:
            self.backend.start(eid)
        elif execution.cancel_requested:
            self.backend.honour_cancel(eid)
        elif ok:
            self.backend.complete(eid, {"wells": 1})
        else:
            self.failures += 1
            self.backend.fail(eid, "boom")

    def active(self) -> list[ScriptedExecution]:
        return self.current(ExecutionStatus.QUEUED) + self.current(ExecutionStatus.RUNNING)

    @rule(i=st.integers(0, 99), ok=st.sampled_from([True] * 7 + [False]))
    def server_steps_one(self, i: int, ok: bool) -> None:
        execution = _pick(self.active(), i)
        if execution is not None:
            self.step_execution(execution, ok)
            self.run()

    @rule()
    def server_steps_all(self) -> None:
        for execution in self.active():
            self.step_execution(execution, ok=True)
        self.run()

    @rule(
        i=st.integers(0, 99),
        well=st.sampled_from(["", "A01", "A02", "B01"]),
        phase=st.sampled_from([*PHASES, "init"]),
        error=st.sampled_from([False, False, False, True]),
        step=st.integers(0, 1),
        done=st.integers(0, 3),
        now=st.booleans(),
    )
    def make_progress(
        self, i: int, well: str, phase: str, error: bool, step: int, done: int, now: bool
    ) -> None:
        runs = self.current(ExecutionStatus.QUEUED, runs_only=True) + self.current(
            ExecutionStatus.RUNNING, runs_only=True
        )
        execution = _pick(runs, i)
        if execution is None:
            return
        if execution.status is ExecutionStatus.QUEUED:
            self.backend.start(execution.execution_id)
        event = self.backend.progress(
            execution.execution_id,
            axis_id=well,
            step_index=step,
            total_steps=2,
            phase=phase,
            status="error" if error else "running",
            completed=done,
            total=3,
            deliver=False,
        )
        if now:
            self.deliver(event)
        else:
            self.pending.append(event)
        self.run()

    @rule(i=st.integers(0, 99))
    def deliver_progress(self, i: int) -> None:
        if self.pending:
            self.deliver(self.pending.pop(i % len(self.pending)))
            self.run()

    @rule(i=st.integers(0, 99))
    def duplicate_progress(self, i: int) -> None:
        delivered = [e for events in self.delivered.values() for e in events]
        event = _pick(delivered, i)
        if event is not None:
            self.deliver(event)
            self.run()

    @rule(
        i=st.integers(0, 99),
        wells=st.lists(st.sampled_from(["A01", "A02"]), min_size=2, max_size=4),
    )
    def burst_reversed(self, i: int, wells: list[str]) -> None:
        """Several events of one execution arrive newest first."""
        execution = _pick(self.current(ExecutionStatus.RUNNING, runs_only=True), i)
        if execution is None:
            return
        events = [
            self.backend.progress(
                execution.execution_id,
                axis_id=well,
                step_index=n % 2,
                total_steps=2,
                phase="step_completed",  # 50 % then 100 %: the order of arrival would show
                deliver=False,
            )
            for n, well in enumerate(wells)
        ]
        for event in reversed(events):
            self.deliver(event)
        self.run()

    @rule(i=st.integers(0, 99))
    def late_progress(self, i: int) -> None:
        """A worker's progress flushed after its execution ended (a late, stale event)."""
        ended = [
            e
            for status in (
                ExecutionStatus.COMPLETE,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
            )
            for e in self.current(status, runs_only=True)
        ]
        execution = _pick(ended, i)
        if execution is not None:
            self.deliver(
                self.backend.progress(execution.execution_id, axis_id="A09", deliver=False)
            )
            self.run()

    @rule(
        action=st.sampled_from(["busy", "shutting_down", "artifact_missing", "expire"]),
        i=st.integers(0, 99),
    )
    def server_mischief(self, action: str, i: int) -> None:
        """Refuse the next submission, or expire a compile artifact before it is used."""
        if action != "expire":
            if not self.backend.rejections:
                self.failures += 1
                self.backend.reject_next(action, f"refused: {action}")
            return
        artifacts = [e for e in self.current(ExecutionStatus.COMPLETE) if e.compile_only]
        execution = _pick(artifacts, i)
        if execution is not None:
            self.failures += 1  # an artifact gone before its execution is submitted
            self.backend.expire_artifact(execution.execution_id)

    @precondition(lambda self: self.disruptions < 1)
    @rule()
    def server_dies(self) -> None:
        self.failures += 1
        self.disruptions += 1
        self.backend.go_offline()
        self.run()

    @precondition(lambda self: self.disruptions < 1 or not self.backend.online)
    @rule()
    def server_restarts(self) -> None:
        self.failures += 1
        self.disruptions += 1
        self.epochs += 1
        self.backend.restart(f"epoch-{self.epochs}")
        self.run()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def callbacks_on_the_dispatcher_thread_and_no_loop_errors(self) -> None:
        assert self.host.off_thread == []
        assert self.loop_errors == []

    @invariant()
    def one_terminal_outcome_per_plate_and_batch(self) -> None:
        if self.service is None:
            return
        records = self.svc.view.snapshot()
        ended_runs: list[BatchReport] = []
        settled_runs: Counter[str] = Counter()
        for batch in self.batches:
            report = batch.report()
            if report is not None:
                assert [o.plate_id for o in report.outcomes] == list(batch.plates)
                assert report.completed + report.failed + report.cancelled == len(batch.plates)
                assert all(o.state in SETTLED[batch.kind] for o in report.outcomes)
                if batch.failures_at_start == self.failures:  # stops, cancels never fail a plate
                    assert not any(o.failed for o in report.outcomes), report
                if batch.kind is BatchKind.RUN:
                    ended_runs.append(report)
            for plate in batch.plates:
                record = records[plate]
                mine = record.batch_id == batch.batch_id
                settled = report is not None or (mine and record.state in SETTLED[batch.kind])
                if batch.kind is BatchKind.RUN and settled:
                    settled_runs[plate] += 1
                if report is not None and mine:
                    assert record.state is report.by_plate[plate].state
        finals = [c.args for c in self.host.named("on_all_plates_completed")]
        assert Counter(finals) == Counter((r.completed, r.failed, r.cancelled) for r in ended_runs)
        per_plate = Counter(c.args[0] for c in self.host.named("on_plate_completed"))
        assert per_plate == settled_runs
        assert len(self.host.named("emit_execution_complete")) == sum(settled_runs.values())

    @invariant()
    def terminal_is_sticky(self) -> None:
        if self.service is None:
            return
        for batch in self.batches:
            for plate in batch.plates:
                record = self.svc.view.plate(plate)
                assert record is not None
                key = (plate, batch.batch_id)
                if record.batch_id != batch.batch_id:
                    self.sticky.pop(key, None)
                    continue
                if record.state not in SETTLED[batch.kind]:
                    assert key not in self.sticky, f"{plate} left its terminal state"
                    continue
                seen = self.sticky.setdefault(key, record)
                assert (record.state, record.error, record.progress, record.execution_id) == (
                    seen.state,
                    seen.error,
                    seen.progress,
                    seen.execution_id,
                )

    @invariant()
    def projection_is_a_function_of_the_delivered_events(self) -> None:
        if self.service is None:
            return
        for plate, record in self.svc.view.snapshot().items():
            progress = record.progress
            if progress is not None:
                assert progress.execution_id == record.execution_id
            if record.state not in (PlateState.QUEUED, PlateState.EXECUTING):
                continue
            if record.execution_id is None:
                assert progress is None
                continue
            events = self.delivered.get(record.execution_id, [])
            if not events:
                assert progress is None
                continue
            reference = PlateProgressAccumulator(plate, record.execution_id)
            for event in sorted(events, key=lambda e: e.seq):
                reference.apply(event)
            assert progress == reference.snapshot()
            assert record.state is PlateState.EXECUTING  # progress means it runs

    # -- the end --------------------------------------------------------------------------

    def drain(self) -> None:
        """Let the server finish everything (or time out, if it is gone); every batch ends."""
        for _ in range(40):
            if all(b.task.done() for b in self.batches):
                return
            if not self.backend.online:
                self.run(LIVENESS + POLL)
                continue
            for execution in self.current(ExecutionStatus.QUEUED):
                self.backend.start(execution.execution_id)
            for execution in self.current(ExecutionStatus.RUNNING):
                if execution.cancel_requested:
                    self.backend.honour_cancel(execution.execution_id)
                else:
                    self.backend.complete(execution.execution_id)
            self.run(2 * POLL)

    def teardown(self) -> None:
        try:
            if self.service is not None:
                self.drain()
                assert all(b.task.done() for b in self.batches), "a batch never ended"
                self.check_all()
                self.loop.run_until_complete(self.svc.shutdown())
                self.run()
                self.check_all()
                assert not self.svc.view.busy
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def check_all(self) -> None:
        self.callbacks_on_the_dispatcher_thread_and_no_loop_errors()
        self.one_terminal_outcome_per_plate_and_batch()
        self.terminal_is_sticky()
        self.projection_is_a_function_of_the_delivered_events()


WorkflowMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_workflow_machine = WorkflowMachine.TestCase
