"""The execution lifecycle and the server's scheduler, without sockets (DESIGN invariant 5).

Unit tests pin the record rules; a Hypothesis state machine drives `ExecutionScheduler` through
any interleaving of submit, start, worker reports, progress, finish, fail, cancel (cooperative
and forced), late and stale results, worker crashes, artifact expiry and shutdown, and checks
every published record change against `LEGAL_TRANSITIONS`.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmqruntime.execution_status import LEGAL_TRANSITIONS, ExecutionStatus
from zmqruntime.messages import (
    CancelNotice,
    ErrorCode,
    ErrorInfo,
    ExecutionEvent,
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

S = ExecutionStatus
CANCEL = ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by test")


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
    for i, axis in enumerate(["A01", "A02", "A01", ""], start=1):
        assert sched.progress(progress_for(eid, axis, completed=i))
    status = sched.status_of(eid)
    assert status.seq == 6  # queued, running, four progress events
    assert status.latest_progress is not None
    assert status.latest_progress.seq == 6
    assert status.latest_progress.axis_id == ""  # plate-level: latest, but not an axis
    assert [(u.axis_id, u.completed) for u in status.axes] == [("A02", 2), ("A01", 3)]
    assert sched.counters.progress_dropped == 1
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
    clock = FakeClock()
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
    assert sched.next_dispatch() is None
    record = sched.lifecycle.get(uses.execution_id)
    assert record is not None
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


class SchedulerMachine(RuleBasedStateMachine):
    """Drives the scheduler like the server and its executor could, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sched = ExecutionScheduler(
            {"h": "mod:h", "c": "mod:c"},
            slots=2,
            artifact_ttl=30.0,
            max_losses=2,
            clock=self.clock,
        )
        self.ids: list[str] = []
        self.artifact_ids: list[str] = []
        self.attempts: dict[int, str] = {}  # every attempt ever dispatched
        self.live: dict[int, str] = {}  # attempts the executor still holds
        self.pids: dict[int, int] = {}
        self.next_pid = 1000
        self.status: dict[str, ExecutionStatus] = {}
        self.seq: dict[str, int] = {}
        self.accepted = 0

    # -- checking every effect ------------------------------------------------------------

    def absorb(self) -> None:
        for effect in self.sched.drain():
            if isinstance(effect, KillWorker):
                assert effect.pid in self.pids.values()
                assert self.status[effect.execution_id] is S.CANCELLED
                continue
            message = effect.message
            if isinstance(message, ExecutionEvent):
                record = message.record
                eid = record.execution_id
                before = self.status.get(eid)
                if before is None:
                    assert record.status is S.QUEUED, record
                else:
                    assert record.status in LEGAL_TRANSITIONS[before], (before, record.status)
                self.status[eid] = record.status
                self.check_seq(eid, message.seq)
                assert (record.result is not None) <= (record.status is S.COMPLETE)
                assert (record.error is not None) == (record.status in (S.FAILED, S.CANCELLED))
                assert (record.finished_at is not None) == record.status.is_terminal
            elif isinstance(message, ProgressUpdate):
                assert self.status[message.execution_id] is S.RUNNING
                self.check_seq(message.execution_id, message.seq)
            elif isinstance(message, CancelNotice):
                assert self.status[message.execution_id] is S.CANCELLED
            else:
                assert isinstance(message, Heartbeat)

    def check_seq(self, execution_id: str, seq: int) -> None:
        assert seq == self.seq.get(execution_id, 0) + 1
        self.seq[execution_id] = seq

    # -- requests -------------------------------------------------------------------------

    @rule(
        handler=st.sampled_from(["h", "c", "nope"]),
        compile_only=st.booleans(),
        artifact=st.integers(min_value=-1, max_value=3),
    )
    def submit(self, handler: str, compile_only: bool, artifact: int) -> None:
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
            self.accepted += 1
            self.ids.append(reply.execution_id)
            if compile_only:
                self.artifact_ids.append(reply.execution_id)
        self.absorb()

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: st.DataObject, force: bool) -> None:
        eid = data.draw(st.sampled_from(self.ids))
        before = self.sched.lifecycle.get(eid)
        assert before is not None
        reply = self.sched.cancel(eid, force=force)
        assert reply.changed == (not before.status.is_terminal)
        assert reply.status is (before.status if before.status.is_terminal else S.CANCELLED)
        self.absorb()

    @rule(force=st.booleans())
    def shutdown(self, force: bool) -> None:
        cancelled = self.sched.begin_shutdown(force=force)
        for eid in cancelled:
            assert self.sched.lifecycle.get(eid).status is S.CANCELLED  # type: ignore[union-attr]
        self.absorb()

    @rule()
    def tick(self) -> None:
        self.sched.tick()
        self.absorb()

    @rule(seconds=st.sampled_from([1.0, 20.0, 40.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- executor news --------------------------------------------------------------------

    @rule()
    def dispatch(self) -> None:
        dispatch = self.sched.next_dispatch()
        if dispatch is not None:
            assert dispatch.attempt not in self.attempts
            self.attempts[dispatch.attempt] = dispatch.execution_id
            self.live[dispatch.attempt] = dispatch.execution_id
        assert len(self.sched.in_flight()) <= self.sched.slots
        self.absorb()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def worker_started(self, data: st.DataObject) -> None:
        attempt = data.draw(st.sampled_from(sorted(self.live)))
        self.next_pid += 1
        self.pids[attempt] = self.next_pid
        self.sched.worker_started(self.live[attempt], self.next_pid)
        self.absorb()

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), axis=st.sampled_from(["A01", "B02", ""]))
    def progress(self, data: st.DataObject, axis: str) -> None:
        eid = data.draw(st.sampled_from([*self.ids, "f" * 32]))
        self.sched.progress(progress_for(eid, axis))
        self.absorb()

    @precondition(lambda self: self.attempts)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["complete", "failed", "cancelled", "bad_result", "array"]),
    )
    def finish(self, data: st.DataObject, kind: str) -> None:
        # Any attempt, including stale ones the executor no longer holds: they must be ignored.
        attempt = data.draw(st.sampled_from(sorted(self.attempts)))
        eid = self.attempts[attempt]
        outcome: JobOutcome
        if kind == "complete":
            outcome = complete({"ok": True})
        elif kind == "bad_result":
            outcome = complete({"bad": object()})
        elif kind == "array":
            outcome = complete([1, 2.5, None])
        elif kind == "failed":
            outcome = failed_outcome(ErrorCode.HANDLER_ERROR, "boom")
        else:
            outcome = {
                "kind": "cancelled",
                "result": None,
                "error": CANCEL.to_wire(),
                "reports": 0,
            }
        before = self.sched.lifecycle.get(eid)
        was_live = self.live.pop(attempt, None) is not None
        self.sched.finish(eid, attempt, outcome)
        after = self.sched.lifecycle.get(eid)
        if not was_live or (before is not None and before.status.is_terminal):
            assert after == before  # stale or late: nothing changes
        self.absorb()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def pool_breaks(self, data: st.DataObject) -> None:
        held = sorted(self.live)
        victims = data.draw(st.lists(st.sampled_from(held), unique=True, max_size=len(held)))
        dead = {self.pids[a]: "killed by signal SIGKILL (9)" for a in victims if a in self.pids}
        self.sched.lost([(self.live[a], a) for a in held], dead, "pool broke")
        for attempt in held:
            del self.live[attempt]
        self.absorb()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def records_match_what_was_published(self) -> None:
        for eid in self.ids:
            record = self.sched.lifecycle.get(eid)
            assert record is not None
            assert record.status is self.status[eid]
            assert self.sched.status_of(eid).seq == self.seq[eid]

    @invariant()
    def queue_is_fifo_and_slots_are_respected(self) -> None:
        queued = [r.execution_id for r in self.sched.lifecycle.queued()]
        assert queued == [eid for eid in self.ids if self.status[eid] is S.QUEUED]
        assert [q.queue_position for q in self.sched.queued_entries()] == list(
            range(1, len(queued) + 1)
        )
        assert len(self.sched.in_flight()) <= self.sched.slots
        held = {eid for eid, _ in self.sched.in_flight()}
        assert held == set(self.live.values())

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


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
