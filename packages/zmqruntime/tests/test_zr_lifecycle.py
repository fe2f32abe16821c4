"""The execution lifecycle and the server's scheduler, without sockets (DESIGN invariant 5).

Unit tests pin the record rules; a Hypothesis state machine drives `ExecutionScheduler` through
any interleaving of submit, dispatch (more attempts than workers: a dispatched attempt stays
queued until its worker reports), worker reports, progress, finish before or after the report,
cancel (cooperative and forced, before or after the start), late and stale results, pool
breakages before and after the start, artifact expiry and shutdown, and checks every record
change against `LEGAL_TRANSITIONS`. The prefetch rules have focused tests of their own in
test_zr_scheduler_prefetch.py.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from zmqruntime.execution_status import LEGAL_TRANSITIONS, ExecutionStatus
from zmqruntime.messages import (
    CancelNotice,
    ErrorCode,
    ErrorInfo,
    ExecutionEvent,
    ExecutionRecord,
    Heartbeat,
    Submit,
)
from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate
from zmqruntime.server.lifecycle import Lifecycle
from zmqruntime.server.scheduler import (
    ExecutionScheduler,
    KillWorker,
    Publish,
    RequestRefused,
)
from zmqruntime.server.worker_runtime import JobOutcome, failed_outcome
from zmqruntime.testing import ManualClock

S = ExecutionStatus
CANCEL = ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by test")


def progress_for(execution_id: str, axis: str = "A01", completed: int = 1) -> ProgressUpdate:
    return ProgressUpdate(
        execution_id=execution_id,
        plate_id="plate",
        axis_id=axis,
        step_name="step",
        step_index=0,
        total_steps=1,
        phase=Phase.PATTERN_GROUP,
        status=ProgressStatus.RUNNING,
        completed=completed,
        total=10,
        percent=10.0 * completed,
        timestamp=1.0,
        seq=0,
    )


def complete(result: Any = None, reports: int = 0) -> JobOutcome:
    return {"kind": "complete", "result": result, "error": None, "reports": reports}


# -- Lifecycle ------------------------------------------------------------------------------


def test_submit_queues_in_fifo_order_with_positions() -> None:
    life = Lifecycle()
    a = life.submit(handler="h")
    b = life.submit(handler="h", label="second")
    assert a.status is S.QUEUED
    assert a.submitted_at > 0
    assert [r.execution_id for r in life.queued()] == [a.execution_id, b.execution_id]
    assert life.queue_position(b.execution_id) == 2
    assert len(a.execution_id) == 32
    assert a.execution_id != b.execution_id


def test_status_result_and_timestamps_change_together() -> None:
    life = Lifecycle()
    eid = life.submit(handler="h").execution_id
    running = life.start(eid)
    assert running is not None
    assert running.status is S.RUNNING
    assert running.started_at
    assert life.queue_position(eid) is None
    assert life.running() == [running]
    done = life.complete(eid, {"wells": 96})
    assert done is not None
    assert (done.status, done.result, done.error) == (S.COMPLETE, {"wells": 96}, None)
    assert done.finished_at is not None
    assert life.running() == []


def test_illegal_transitions_are_refused_and_change_nothing() -> None:
    life = Lifecycle()
    eid = life.submit(handler="h").execution_id
    before = life.get(eid)
    assert life.complete(eid, 1) is None  # queued -> complete is not legal
    assert life.fail(eid, ErrorInfo(code=ErrorCode.INTERNAL, message="x")) is None
    assert life.get(eid) is before
    assert life.start(eid) is not None
    assert life.start(eid) is None  # running -> running
    assert life.cancel(eid, CANCEL) is not None
    cancelled = life.get(eid)
    # Terminal is sticky: a late result, a failure, a restart all leave it as it is.
    assert life.complete(eid, {"late": True}) is None
    assert life.fail(eid, ErrorInfo(code=ErrorCode.WORKER_LOST, message="x")) is None
    assert life.start(eid) is None
    assert life.cancel(eid, CANCEL) is None
    assert life.get(eid) is cancelled
    assert life.complete("0" * 32, 1) is None  # unknown id


def test_cancelling_a_queued_execution_removes_it_from_the_queue() -> None:
    life = Lifecycle()
    a, b, c = (life.submit(handler="h").execution_id for _ in range(3))
    record = life.cancel(b, CANCEL)
    assert record is not None
    assert record.error == CANCEL
    assert record.finished_at is not None
    assert [r.execution_id for r in life.queued()] == [a, c]
    assert life.queue_position(c) == 2


def test_oldest_terminal_records_are_evicted_beyond_the_limit() -> None:
    life = Lifecycle(max_records=3)
    first = life.submit(handler="h").execution_id
    life.start(first)
    life.complete(first, None)
    second = life.submit(handler="h").execution_id
    life.cancel(second, CANCEL)
    live = [life.submit(handler="h").execution_id for _ in range(2)]
    # Four records, limit three: the oldest terminal one goes.
    assert first not in life
    assert second in life
    assert life.drain_evicted() == [first]
    assert life.is_full is False
    third = life.submit(handler="h").execution_id
    assert second not in life
    assert life.drain_evicted() == [second]
    assert life.is_full  # three live records: nothing left to evict
    with pytest.raises(RuntimeError):
        life.submit(handler="h")
    assert all(eid in life for eid in [*live, third])


def test_taken_records_stay_queued_in_place_and_are_not_taken_again() -> None:
    life = Lifecycle()
    a, b, c = (life.submit(handler="h").execution_id for _ in range(3))
    assert life.take_next() == a
    assert life.take_next() == b
    assert (life.is_taken(a), life.is_taken(b), life.is_taken(c)) == (True, True, False)
    assert life.get(a).status is S.QUEUED  # type: ignore[union-attr]
    assert [life.queue_position(eid) for eid in (a, b, c)] == [1, 2, 3]
    assert life.queue_length == 3
    started = life.start(b, worker_pid=42)
    assert started is not None
    assert (started.status, started.worker_pid) == (S.RUNNING, 42)
    assert started.started_at is not None
    assert life.is_taken(b) is False  # no longer queued at all
    assert [r.execution_id for r in life.queued()] == [a, c]
    life.cancel(a, CANCEL)
    assert life.take_next() == c
    assert life.take_next() is None
    d = life.submit(handler="h").execution_id
    assert life.queue_position(d) == life.queue_length == 2
    assert life.take_next() == d


def test_a_cancelled_untaken_record_is_never_taken() -> None:
    life = Lifecycle()
    a, b = (life.submit(handler="h").execution_id for _ in range(2))
    life.cancel(a, CANCEL)
    assert life.take_next() == b
    assert life.take_next() is None


def test_taking_a_large_batch_keeps_fifo_order_and_positions() -> None:
    # take_next pops the head of the untaken queue, so 10,000 submissions stay linear.
    life = Lifecycle(max_records=10_000)
    ids = [life.submit(handler="h").execution_id for _ in range(10_000)]
    assert [life.take_next() for _ in range(10_000)] == ids
    assert life.take_next() is None
    for eid in ids[::2]:
        life.start(eid)
    assert life.queue_length == 5_000
    assert [r.execution_id for r in life.queued()] == ids[1::2]


def test_set_worker_only_touches_running_records() -> None:
    life = Lifecycle()
    eid = life.submit(handler="h").execution_id
    assert life.set_worker(eid, 42) is None
    life.start(eid)
    record = life.set_worker(eid, 42)
    assert record is not None
    assert record.worker_pid == 42
    assert record.status is S.RUNNING


# -- Scheduler: focused scenarios -----------------------------------------------------------


def make_scheduler(slots: int = 2, **options: Any) -> ExecutionScheduler:
    return ExecutionScheduler({"h": "mod:h", "c": "mod:c"}, slots=slots, **options)


def events(effects: list[Any]) -> list[ExecutionEvent]:
    return [
        e.message
        for e in effects
        if isinstance(e, Publish) and isinstance(e.message, ExecutionEvent)
    ]


def test_cancel_affects_only_that_execution() -> None:
    sched = make_scheduler(slots=2)
    ids = [sched.submit(Submit(handler="h", params={})).execution_id for _ in range(3)]
    a = sched.next_dispatch()
    b = sched.next_dispatch()
    assert a is not None
    assert b is not None
    assert sched.next_dispatch() is None
    sched.worker_started(a.execution_id, 111)
    sched.worker_started(b.execution_id, 222)
    sched.drain()
    reply = sched.cancel(a.execution_id, force=True)
    assert reply.changed
    assert reply.status is S.CANCELLED
    effects = sched.drain()
    assert KillWorker(111, a.execution_id) in effects
    assert Publish("__cancel__", CancelNotice(execution_id=a.execution_id, force=True)) in effects
    assert [e.record.execution_id for e in events(effects)] == [a.execution_id]
    statuses = {eid: sched.lifecycle.get(eid).status for eid in ids}  # type: ignore[union-attr]
    assert statuses == {ids[0]: S.CANCELLED, ids[1]: S.RUNNING, ids[2]: S.QUEUED}
    # The cancelled attempt still holds its slot until the executor reports on it.
    assert sched.next_dispatch() is None
    sched.finish(a.execution_id, a.attempt, complete({"late": True}))
    late = sched.lifecycle.get(a.execution_id)
    assert late is not None
    assert late.status is S.CANCELLED
    assert late.result is None
    nxt = sched.next_dispatch()
    assert nxt is not None
    assert nxt.execution_id == ids[2]
    again = sched.cancel(a.execution_id)
    assert (again.changed, again.status) == (False, S.CANCELLED)


def test_pool_breakage_fails_the_dead_workers_execution_and_restarts_the_others() -> None:
    sched = make_scheduler(slots=2)
    ids = [sched.submit(Submit(handler="h", params={})).execution_id for _ in range(3)]
    a, b = sched.next_dispatch(), sched.next_dispatch()
    assert a is not None
    assert b is not None
    sched.worker_started(a.execution_id, 111)
    sched.worker_started(b.execution_id, 222)
    sched.lost(sched.in_flight(), {111: "killed by signal SIGKILL (9)"}, "broken")
    lost = sched.lifecycle.get(a.execution_id)
    assert lost is not None
    assert lost.status is S.FAILED
    assert lost.error is not None
    assert lost.error.code is ErrorCode.WORKER_LOST
    assert "111" in lost.error.message
    assert "SIGKILL" in lost.error.message
    survivor = sched.lifecycle.get(b.execution_id)
    assert survivor is not None
    assert survivor.status is S.RUNNING
    assert survivor.worker_pid is None
    again = sched.next_dispatch()
    assert again is not None
    assert again.execution_id == b.execution_id
    third = sched.next_dispatch()
    assert third is not None
    assert third.execution_id == ids[2]


def test_an_execution_caught_in_repeated_breakages_eventually_fails() -> None:
    sched = make_scheduler(slots=1, max_losses=3)
    eid = sched.submit(Submit(handler="h", params={})).execution_id
    for _ in range(3):
        dispatch = sched.next_dispatch()
        assert dispatch is not None
        sched.lost([(eid, dispatch.attempt)], {}, "broken")
    record = sched.lifecycle.get(eid)
    assert record is not None
    assert record.status is S.FAILED
    assert record.error is not None
    assert "3 times" in record.error.message


def test_a_lone_anonymous_attempt_is_matched_to_the_lone_dead_worker() -> None:
    sched = make_scheduler(slots=2)
    eid = sched.submit(Submit(handler="h", params={})).execution_id
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    sched.lost([(eid, dispatch.attempt)], {555: "exited with code 3"}, "broken")
    record = sched.lifecycle.get(eid)
    assert record is not None
    assert record.status is S.FAILED
    assert record.error is not None
    assert "555 exited with code 3" in record.error.message


def test_progress_is_stamped_with_the_shared_sequence_and_cached_per_axis() -> None:
    sched = make_scheduler()
    eid = sched.submit(Submit(handler="h", params={})).execution_id
    assert sched.progress(progress_for(eid)) is False  # still queued: dropped
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    assert sched.progress(progress_for(eid)) is False  # dispatched, not started: dropped
    sched.worker_started(eid, 111)
    for i, axis in enumerate(["A01", "A02", "A01", ""], start=1):
        assert sched.progress(progress_for(eid, axis, completed=i))
    status = sched.status_of(eid)
    assert status.seq == 6  # queued, running, four progress events
    assert status.latest_progress is not None
    assert status.latest_progress.seq == 6
    assert status.latest_progress.axis_id == ""  # plate-level: latest, but not an axis
    assert [(u.axis_id, u.completed) for u in status.axes] == [("A02", 2), ("A01", 3)]
    assert sched.counters.progress_dropped == 2
    sched.finish(eid, dispatch.attempt, complete())
    assert sched.progress(progress_for(eid)) is False
    assert sched.status_of(eid).seq == 7


def test_a_result_that_is_not_json_fails_the_execution() -> None:
    sched = make_scheduler()
    eid = sched.submit(Submit(handler="h", params={})).execution_id
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    sched.finish(eid, dispatch.attempt, complete({"x": {1, 2}}))
    record = sched.lifecycle.get(eid)
    assert record is not None
    assert record.status is S.FAILED
    assert record.error is not None
    assert record.error.code is ErrorCode.HANDLER_ERROR
    assert "not JSON" in record.error.message
    assert "result.x" in record.error.message


def test_artifacts_are_required_at_submit_and_again_at_start() -> None:
    clock = ManualClock()
    sched = make_scheduler(slots=1, artifact_ttl=60.0, clock=clock)
    compile_id = sched.submit(Submit(handler="c", params={}, compile_only=True)).execution_id
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    assert dispatch.compile_only
    sched.finish(compile_id, dispatch.attempt, complete({"plan": [1, 2]}))
    with pytest.raises(RequestRefused) as missing:
        sched.submit(Submit(handler="h", params={}, compile_artifact_id="f" * 32))
    assert missing.value.code is ErrorCode.ARTIFACT_MISSING
    blocker = sched.submit(Submit(handler="h", params={})).execution_id
    held = sched.next_dispatch()
    assert held is not None
    uses = sched.submit(Submit(handler="h", params={}, compile_artifact_id=compile_id))
    clock.advance(61.0)
    sched.finish(blocker, held.attempt, complete())
    sched.drain()
    assert sched.next_dispatch() is None
    # Through `running` (the only legal way to `failed`), but only the end is published.
    [event] = events(sched.drain())
    assert event.seq == 2
    record = sched.lifecycle.get(uses.execution_id)
    assert record == event.record
    assert record is not None
    assert record.started_at is not None
    assert record.status is S.FAILED
    assert record.error is not None
    assert record.error.code is ErrorCode.ARTIFACT_MISSING
    with pytest.raises(RequestRefused) as expired:
        sched.submit(Submit(handler="h", params={}, compile_artifact_id=compile_id))
    assert expired.value.code is ErrorCode.ARTIFACT_MISSING


def test_graceful_shutdown_cancels_the_queue_and_lets_running_work_end() -> None:
    sched = make_scheduler(slots=1)
    running = sched.submit(Submit(handler="h", params={})).execution_id
    queued = sched.submit(Submit(handler="h", params={})).execution_id
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    sched.worker_started(running, 111)
    assert sched.begin_shutdown(force=False) == [queued]
    with pytest.raises(RequestRefused) as refused:
        sched.submit(Submit(handler="h", params={}))
    assert refused.value.code is ErrorCode.SHUTTING_DOWN
    assert not sched.drained
    sched.finish(running, dispatch.attempt, complete(7))
    assert sched.drained
    record = sched.lifecycle.get(running)
    assert record is not None
    assert record.status is S.COMPLETE
    assert record.result == 7


# -- Scheduler: any interleaving (Hypothesis) -----------------------------------------------


class CheckedLifecycle(Lifecycle):
    """The real `Lifecycle`, also logging each record change it applies (published or not),
    so the machine can check every change, including the unpublished pass through `running`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.changes: list[tuple[str, ExecutionStatus, ExecutionStatus]] = []

    def _transition(
        self, execution_id: str, target: ExecutionStatus, **changes: Any
    ) -> ExecutionRecord | None:
        before = self.get(execution_id)
        after = super()._transition(execution_id, target, **changes)
        if after is not None:
            assert before is not None
            self.changes.append((execution_id, before.status, after.status))
        return after


OUTCOME_KINDS = st.sampled_from(["complete", "failed", "cancelled", "bad_result", "array"])


class SchedulerMachine(RuleBasedStateMachine):
    """Drives the scheduler like the server and its executor could, in any order.

    The executor may hold more attempts than it has workers: a dispatched attempt's record
    stays queued until `worker_started`, and its outcome or the pool breaking may come first.
    """

    sched: ExecutionScheduler
    lifecycle: CheckedLifecycle

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.ids: list[str] = []
        self.artifact_ids: list[str] = []
        self.attempts: dict[int, str] = {}  # every attempt ever dispatched
        self.live: dict[int, str] = {}  # attempts the executor still holds
        self.pids: dict[int, int] = {}  # attempt → pid its worker_started reported
        self.next_pid = 1000
        self.status: dict[str, ExecutionStatus] = {}
        self.seq: dict[str, int] = {}
        self.started: set[str] = set()  # executions a worker_started was received for
        self.restarting: list[str] = []  # lost and not failed: dispatched again first
        self.accepted = 0

    @initialize(slots=st.sampled_from([1, 2, 4]), max_losses=st.sampled_from([1, 2]))
    def create(self, slots: int, max_losses: int) -> None:
        self.sched = ExecutionScheduler(
            {"h": "mod:h", "c": "mod:c"},
            slots=slots,
            artifact_ttl=30.0,
            max_losses=max_losses,
            clock=self.clock,
        )
        self.lifecycle = CheckedLifecycle(max_records=self.sched.lifecycle.max_records)
        self.sched.lifecycle = self.lifecycle

    def record(self, execution_id: str) -> ExecutionRecord:
        record = self.sched.lifecycle.get(execution_id)
        assert record is not None
        return record

    # -- checking every effect and record change ------------------------------------------

    def absorb(self, reporter: str | None = None) -> dict[str, ExecutionEvent]:
        """Check the step's effects and record changes; its `execution` events by id.

        `reporter`: the execution a worker_started report was handled for in this step, the
        only one that may have become `running` (anything else passes through to an end).
        """
        before_step = dict(self.status)
        published: dict[str, ExecutionEvent] = {}
        for effect in self.sched.drain():
            if isinstance(effect, KillWorker):
                assert effect.pid in self.pids.values()
                assert self.status[effect.execution_id] is S.CANCELLED
                continue
            message = effect.message
            if isinstance(message, ExecutionEvent):
                record = message.record
                eid = record.execution_id
                assert eid not in published, "one execution event per execution and step"
                published[eid] = message
                before = self.status.get(eid)
                if before is None:
                    assert record.status is S.QUEUED, record
                self.status[eid] = record.status
                self.check_seq(eid, message.seq)
                assert (record.result is not None) <= (record.status is S.COMPLETE)
                assert (record.error is not None) == (record.status in (S.FAILED, S.CANCELLED))
                assert (record.finished_at is not None) == record.status.is_terminal
                if record.status in (S.RUNNING, S.COMPLETE, S.FAILED):
                    assert record.started_at is not None
                elif record.status is S.QUEUED:
                    assert record.started_at is None
            elif isinstance(message, ProgressUpdate):
                assert self.status[message.execution_id] is S.RUNNING
                self.check_seq(message.execution_id, message.seq)
            elif isinstance(message, CancelNotice):
                assert self.status[message.execution_id] is S.CANCELLED
            else:
                assert isinstance(message, Heartbeat)
        chains: dict[str, list[tuple[ExecutionStatus, ExecutionStatus]]] = {}
        for eid, old, new in self.lifecycle.changes:
            chains.setdefault(eid, []).append((old, new))
        self.lifecycle.changes.clear()
        for eid, chain in chains.items():
            assert eid in published, f"{eid} changed without an event: {chain}"
            status = before_step[eid]
            for old, new in chain:
                assert old is status
                assert new in LEGAL_TRANSITIONS[old], (old, new)
                status = new
            assert status is published[eid].record.status
            if status is S.RUNNING:
                assert eid == reporter, "only a worker's report starts an execution"
        for eid, event in published.items():
            assert eid in chains or before_step.get(eid) is None  # no event without a change
            assert event.record == self.sched.lifecycle.get(eid)
        return published

    def check_seq(self, execution_id: str, seq: int) -> None:
        assert seq == self.seq.get(execution_id, 0) + 1
        self.seq[execution_id] = seq

    def restarts_pending(self) -> list[str]:
        return [eid for eid in self.restarting if not self.status[eid].is_terminal]

    # -- requests -------------------------------------------------------------------------

    @rule(
        handler=st.sampled_from(["h", "c", "nope"]),
        compile_only=st.booleans(),
        artifact=st.integers(min_value=-1, max_value=3),
        count=st.integers(min_value=1, max_value=3),
    )
    def submit(self, handler: str, compile_only: bool, artifact: int, count: int) -> None:
        """Submit `count` alike requests (a client's batch)."""
        for _ in range(count):
            self.submit_one(handler, compile_only, artifact)

    def submit_one(self, handler: str, compile_only: bool, artifact: int) -> None:
        artifact_id = None
        if not compile_only and 0 <= artifact < len(self.artifact_ids):
            artifact_id = self.artifact_ids[artifact]
        request = Submit(
            handler=handler,
            params={"n": 1},
            compile_only=compile_only,
            compile_artifact_id=artifact_id,
        )
        refusal = None
        if not self.sched.accepting:
            refusal = ErrorCode.SHUTTING_DOWN
        elif handler == "nope":
            refusal = ErrorCode.UNKNOWN_HANDLER
        elif artifact_id is not None and artifact_id not in self.sched.artifacts:
            refusal = ErrorCode.ARTIFACT_MISSING
        if refusal is not None:
            with pytest.raises(RequestRefused) as refused:
                self.sched.submit(request)
            assert refused.value.code is refusal
        else:
            reply = self.sched.submit(request)
            assert reply.status is S.QUEUED
            # Exact: dispatched-but-unstarted executions still count as queued ahead of it.
            assert reply.queue_position == 1 + sum(self.status[eid] is S.QUEUED for eid in self.ids)
            self.accepted += 1
            self.ids.append(reply.execution_id)
            if compile_only:
                self.artifact_ids.append(reply.execution_id)
        self.absorb()

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: st.DataObject, force: bool) -> None:
        eid = data.draw(st.sampled_from(self.ids))
        before = self.record(eid)
        on_executor = eid in self.live.values()
        reply = self.sched.cancel(eid, force=force)
        assert reply.changed == (not before.status.is_terminal)
        assert reply.status is (before.status if before.status.is_terminal else S.CANCELLED)
        notices = [
            e.message
            for e in self.sched.pending_effects()
            if isinstance(e, Publish) and isinstance(e.message, CancelNotice)
        ]
        self.absorb()
        if reply.changed:
            # Started or not, an attempt on the executor keeps its slot and gets a notice.
            assert (eid in dict(self.sched.in_flight())) == on_executor
            assert notices == ([CancelNotice(execution_id=eid, force=force)] if on_executor else [])

    # Shutting down ends all new work, so it comes late and rarely (one draw in four).
    @precondition(lambda self: len(self.ids) >= 3)
    @rule(force=st.booleans(), now=st.integers(min_value=0, max_value=3))
    def shutdown(self, force: bool, now: int) -> None:
        if now:
            return
        running = {r.execution_id for r in self.sched.lifecycle.running()}
        cancelled = self.sched.begin_shutdown(force=force)
        self.absorb()
        for eid in cancelled:
            assert self.status[eid] is S.CANCELLED
        assert not self.sched.lifecycle.queued()
        if not force:
            assert {r.execution_id for r in self.sched.lifecycle.running()} == running

    @rule(seconds=st.sampled_from([0.0, 1.0, 20.0, 40.0]))
    def tick(self, seconds: float) -> None:
        """Time passes (artifacts may expire) and the heartbeat ticks."""
        self.clock.advance(seconds)
        self.sched.tick()
        self.absorb()

    # -- executor news --------------------------------------------------------------------

    def work_waits(self) -> bool:
        held = set(self.live.values())
        return bool(self.restarts_pending()) or any(
            self.status[eid] is S.QUEUED and eid not in held for eid in self.ids
        )

    @precondition(lambda self: self.work_waits())
    @rule(count=st.integers(min_value=1, max_value=4))
    def dispatch(self, count: int) -> None:
        """Ask for up to `count` attempts, as the server pumps until no slot or work is left."""
        for _ in range(count):
            if not self.dispatch_one():
                return

    def dispatch_one(self) -> bool:
        restarting = self.restarts_pending()
        held = set(self.live.values())
        waiting = [
            eid
            for eid in self.ids
            if self.status[eid] is S.QUEUED and eid not in held and eid not in restarting
        ]
        dispatch = self.sched.next_dispatch()
        published = self.absorb()
        if dispatch is None:
            assert len(self.sched.in_flight()) == self.sched.slots or (
                not restarting
                and (not self.sched.accepting or all(self.status[e].is_terminal for e in waiting))
            )
        else:
            eid = dispatch.execution_id
            assert eid not in held  # never dispatched twice at once
            assert dispatch.attempt not in self.attempts
            if restarting:
                assert eid == restarting.pop(0)  # restarts first, in their original order
            else:
                # The oldest undispatched one; any skipped had their artifact expire.
                skipped = waiting[: waiting.index(eid)]
                for other in skipped:
                    error = self.record(other).error
                    assert error is not None
                    assert error.code is ErrorCode.ARTIFACT_MISSING
            assert eid not in published  # dispatching starts nothing
            assert not self.status[eid].is_terminal
            self.attempts[dispatch.attempt] = eid
            self.live[dispatch.attempt] = eid
        self.restarting = restarting
        assert len(self.sched.in_flight()) <= self.sched.slots
        return dispatch is not None

    @precondition(lambda self: bool(set(self.live) - set(self.pids)))
    @rule(data=st.data())
    def worker_started(self, data: st.DataObject) -> None:
        attempt = data.draw(st.sampled_from(sorted(set(self.live) - set(self.pids))))
        eid = self.live[attempt]
        before = self.record(eid)
        self.next_pid += 1
        self.pids[attempt] = self.next_pid
        self.sched.worker_started(eid, self.next_pid)
        self.started.add(eid)
        published = self.absorb(reporter=eid)
        after = self.record(eid)
        if before.status is S.QUEUED:
            # One record change, one event: running, its start time and its worker together.
            assert eid in published
            assert published[eid].record == after
            assert (after.status, after.worker_pid) == (S.RUNNING, self.next_pid)
            assert after.started_at is not None
        elif before.status is S.RUNNING:
            assert eid not in published
            assert after.worker_pid == self.next_pid
        else:
            assert after == before

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), axis=st.sampled_from(["A01", "B02", ""]))
    def progress(self, data: st.DataObject, axis: str) -> None:
        eid = data.draw(st.sampled_from([*self.ids, "f" * 32]))
        self.sched.progress(progress_for(eid, axis))
        self.absorb()

    def outcome_of(self, kind: str) -> JobOutcome:
        if kind == "complete":
            return complete({"ok": True})
        if kind == "bad_result":
            return complete({"bad": object()})
        if kind == "array":
            return complete([1, 2.5, None])
        if kind == "failed":
            return failed_outcome(ErrorCode.HANDLER_ERROR, "boom")
        return {"kind": "cancelled", "result": None, "error": CANCEL.to_wire(), "reports": 0}

    @precondition(lambda self: self.live)
    @rule(data=st.data(), kind=OUTCOME_KINDS)
    def finish(self, data: st.DataObject, kind: str) -> None:
        # Possibly before the attempt's worker_started report was handled (or ever sent).
        attempt = data.draw(st.sampled_from(sorted(self.live)))
        eid = self.live.pop(attempt)
        before = self.record(eid)
        self.sched.finish(eid, attempt, self.outcome_of(kind))
        published = self.absorb()
        after = self.record(eid)
        if before.status.is_terminal:
            assert after == before  # late: cancelled meanwhile, the outcome is ignored
            assert eid not in published
        else:
            assert after.status.is_terminal
            assert eid in published
            assert published[eid].record == after  # one event, even straight from queued
            assert after.started_at is not None

    @precondition(lambda self: bool(set(self.attempts) - set(self.live)))
    @rule(data=st.data(), kind=OUTCOME_KINDS)
    def stale_result(self, data: st.DataObject, kind: str) -> None:
        # An attempt the executor no longer holds (finished, or lost with its pool): ignored.
        attempt = data.draw(st.sampled_from(sorted(set(self.attempts) - set(self.live))))
        eid = self.attempts[attempt]
        before = self.record(eid)
        self.sched.finish(eid, attempt, self.outcome_of(kind))
        assert eid not in self.absorb()
        assert self.record(eid) == before

    @precondition(lambda self: self.live)
    @rule(data=st.data(), at_submit=st.booleans(), stray=st.booleans())
    def pool_breaks(self, data: st.DataObject, at_submit: bool, stray: bool) -> None:
        """The pool breaks: every attempt it held is lost, and some workers are dead (reported
        ones, or `stray`: one that died before its report got out, or an idle one). Or, like
        the server's `submit` finding the pool broken, only the newest attempt, with no dead
        workers known."""
        held = sorted(self.live)
        if at_submit:
            self.break_pool(held[-1:], {})
            return
        reported = [a for a in held if a in self.pids]
        victims = data.draw(st.lists(st.sampled_from(reported), unique=True)) if reported else []
        dead = {self.pids[a]: "killed by signal SIGKILL (9)" for a in victims}
        if stray:
            self.next_pid += 1
            dead[self.next_pid] = "exited with code 1"
        self.break_pool(held, dead)

    @precondition(lambda self: bool(set(self.live) & set(self.pids)))
    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        """A started attempt's worker dies (its handler crashed it) and the pool breaks."""
        attempt = data.draw(st.sampled_from(sorted(set(self.live) & set(self.pids))))
        self.break_pool(sorted(self.live), {self.pids[attempt]: "killed by signal SIGSEGV (11)"})

    def break_pool(self, lost: list[int], dead: dict[int, str]) -> None:
        explained = any(self.pids.get(a) in dead for a in lost)
        before = {a: self.record(self.live[a]).status for a in lost}
        self.sched.lost([(self.live[a], a) for a in lost], dead, "pool broke")
        self.absorb()
        for attempt in lost:
            eid = self.live.pop(attempt)
            after = self.record(eid)
            if before[attempt].is_terminal:
                continue
            if self.pids.get(attempt) in dead:
                assert after.status is S.FAILED
                assert after.error is not None
                assert after.error.code is ErrorCode.WORKER_LOST
            elif explained and before[attempt] is S.QUEUED:
                assert after.status is S.QUEUED  # never started: restarts for free
            if not after.status.is_terminal:
                self.restarting.append(eid)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def records_match_what_was_published(self) -> None:
        for eid in self.ids:
            assert self.record(eid).status is self.status[eid]
            assert self.sched.status_of(eid).seq == self.seq[eid]

    @invariant()
    def queue_is_fifo_and_slots_are_respected(self) -> None:
        queued = [r.execution_id for r in self.sched.lifecycle.queued()]
        assert queued == [eid for eid in self.ids if self.status[eid] is S.QUEUED]
        assert [q.queue_position for q in self.sched.queued_entries()] == list(
            range(1, len(queued) + 1)
        )
        assert self.sched.lifecycle.queue_length == len(queued)
        assert len(self.sched.in_flight()) <= self.sched.slots
        held = {eid for eid, _ in self.sched.in_flight()}
        assert held == set(self.live.values())
        for eid in queued:  # dispatched (or waiting to be again): never taken twice
            assert self.sched.lifecycle.is_taken(eid) == (
                eid in held or eid in self.restarts_pending()
            )

    @invariant()
    def running_only_once_a_worker_reported(self) -> None:
        running = [r.execution_id for r in self.sched.lifecycle.running()]
        assert set(running) <= self.started
        assert [r.execution_id for r in self.sched.running_entries()] == running
        held = {eid for eid, _ in self.sched.in_flight()}
        assert set(self.sched.busy_workers().values()) <= held

    @invariant()
    def counters_add_up(self) -> None:
        counters = self.sched.counters
        assert counters.submitted == self.accepted == len(self.ids)
        ended = [s for s in self.status.values() if s.is_terminal]
        assert counters.completed == ended.count(S.COMPLETE)
        assert counters.failed == ended.count(S.FAILED)
        assert counters.cancelled == ended.count(S.CANCELLED)

    @invariant()
    def shutdown_stops_new_work(self) -> None:
        if not self.sched.accepting:
            assert not self.sched.lifecycle.queued()
        if self.sched.forced:
            assert not self.sched.lifecycle.running()
        assert self.sched.drained == (
            not self.sched.accepting and not self.live and not self.restarts_pending()
        )


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


def test_status_snapshots_are_reused_only_while_current() -> None:
    sched = make_scheduler(slots=1)
    eid = sched.submit(Submit(handler="h", params={})).execution_id
    first = sched.status_of(eid)
    assert sched.status_of(eid) is first  # nothing changed: the same reply
    dispatch = sched.next_dispatch()
    assert dispatch is not None
    sched.worker_started(eid, 4242)
    started = sched.status_of(eid)
    assert started.execution.status is ExecutionStatus.RUNNING
    assert started.execution.worker_pid == 4242
    assert started.seq == first.seq + 1
    assert sched.progress(progress_for(eid, "B02", 3))
    with_progress = sched.status_of(eid)
    assert with_progress.seq == started.seq + 1
    assert with_progress.latest_progress is not None
    assert [u.axis_id for u in with_progress.axes] == ["B02"]
    # A record change that publishes nothing (a restarted attempt's worker) is still seen.
    sched.lifecycle.set_worker(eid, 777)
    assert sched.status_of(eid).execution.worker_pid == 777
    sched.finish(
        eid, dispatch.attempt, {"kind": "complete", "result": 1, "error": None, "reports": 2}
    )
    final = sched.status_of(eid)
    assert final.execution.status is ExecutionStatus.COMPLETE
    assert final.seq == with_progress.seq + 1
