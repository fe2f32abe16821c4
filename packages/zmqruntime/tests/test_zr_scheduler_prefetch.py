"""The scheduler with more attempts on the executor than it has workers (prefetch).

A dispatched attempt stays `queued`, in place, until its worker reports `worker_started`; an
outcome, a cancellation or a pool breakage may come first. Scenarios use slots=4 as a server
with two workers and a prefetch of two would.
"""

from __future__ import annotations

from typing import Any

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import CancelNotice, ErrorCode, ExecutionEvent, Submit
from zmqruntime.server.scheduler import Dispatch, ExecutionScheduler, KillWorker, Publish
from zmqruntime.server.worker_runtime import JobOutcome
from zmqruntime.testing import ManualClock

S = ExecutionStatus
DONE: JobOutcome = {"kind": "complete", "result": {"ok": True}, "error": None, "reports": 1}


def scheduler(slots: int = 4, **options: Any) -> ExecutionScheduler:
    return ExecutionScheduler({"h": "mod:h", "c": "mod:c"}, slots=slots, **options)


def submit(sched: ExecutionScheduler, count: int) -> list[str]:
    return [sched.submit(Submit(handler="h", params={})).execution_id for _ in range(count)]


def pump(sched: ExecutionScheduler) -> list[Dispatch]:
    """Dispatch until no slot or work is left, as the server does."""
    dispatched = []
    while (dispatch := sched.next_dispatch()) is not None:
        dispatched.append(dispatch)
    return dispatched


def record_events(effects: list[Any]) -> list[ExecutionEvent]:
    return [
        e.message
        for e in effects
        if isinstance(e, Publish) and isinstance(e.message, ExecutionEvent)
    ]


def status(sched: ExecutionScheduler, execution_id: str) -> ExecutionStatus:
    record = sched.lifecycle.get(execution_id)
    assert record is not None
    return record.status


# -- 1. dispatching starts nothing ----------------------------------------------------------


def test_dispatched_attempts_stay_queued_in_place_until_their_worker_reports() -> None:
    sched = scheduler(slots=4)
    ids = submit(sched, 6)
    sched.drain()
    dispatched = pump(sched)
    assert [d.execution_id for d in dispatched] == ids[:4]
    assert record_events(sched.drain()) == []  # nothing changed state
    assert sched.next_dispatch() is None  # slots full: not handed out again either
    sched.worker_started(ids[0], 101)
    sched.worker_started(ids[1], 102)
    assert [status(sched, eid) for eid in ids] == [S.RUNNING] * 2 + [S.QUEUED] * 4
    # Dispatched-but-waiting executions keep positions 1 and 2, ahead of the undispatched.
    assert [(q.execution_id, q.queue_position) for q in sched.queued_entries()] == [
        (eid, position) for position, eid in enumerate(ids[2:], start=1)
    ]
    assert [r.execution_id for r in sched.running_entries()] == ids[:2]
    assert sched.busy_workers() == {101: ids[0], 102: ids[1]}
    assert [eid for eid, _ in sched.in_flight()] == ids[:4]
    late = sched.submit(Submit(handler="h", params={}))
    assert late.queue_position == 5
    # A finished attempt frees its slot for the oldest undispatched execution.
    sched.finish(ids[0], dispatched[0].attempt, DONE)
    [nxt] = pump(sched)
    assert nxt.execution_id == ids[4]


def test_a_large_batch_is_dispatched_in_order_without_being_handed_out_twice() -> None:
    sched = scheduler(slots=64)
    ids = submit(sched, 10_000)
    seen: list[str] = []
    while len(seen) < len(ids):
        batch = pump(sched)
        assert len(batch) == 64 or len(seen) + len(batch) == len(ids)
        seen.extend(d.execution_id for d in batch)
        for dispatch in batch:
            sched.finish(dispatch.execution_id, dispatch.attempt, DONE)
    assert seen == ids
    assert sched.lifecycle.queue_length == 0


# -- 2. worker_started ----------------------------------------------------------------------


def test_worker_started_publishes_running_with_its_pid_in_one_event() -> None:
    clock = ManualClock(50.0)
    sched = ExecutionScheduler({"h": "mod:h"}, slots=2, wall_clock=clock)
    [eid] = submit(sched, 1)
    pump(sched)
    sched.drain()
    clock.advance(3.0)
    sched.worker_started(eid, 4242)
    [event] = record_events(sched.drain())
    assert event.seq == 2
    assert event.record.status is S.RUNNING
    assert event.record.worker_pid == 4242
    assert event.record.started_at == 53.0
    assert sched.lifecycle.get(eid) == event.record
    assert sched.reports_seen(eid) == 1


def test_a_restarted_execution_only_gets_its_new_pid() -> None:
    sched = scheduler(slots=2)
    a, b = submit(sched, 2)
    first = pump(sched)
    sched.worker_started(a, 101)
    sched.worker_started(b, 102)
    sched.lost(sched.in_flight(), {101: "killed by signal SIGKILL (9)"}, "broken")
    sched.drain()
    [again] = pump(sched)
    assert again.execution_id == b
    assert again.attempt > first[1].attempt
    sched.worker_started(b, 303)
    assert record_events(sched.drain()) == []  # still running: no new state
    record = sched.lifecycle.get(b)
    assert record is not None
    assert (record.status, record.worker_pid) == (S.RUNNING, 303)


# -- 3. artifacts ---------------------------------------------------------------------------


def test_an_artifact_that_expired_before_dispatch_fails_with_one_event() -> None:
    clock = ManualClock()
    sched = scheduler(slots=1, artifact_ttl=10.0, clock=clock)
    compile_id = sched.submit(Submit(handler="c", params={}, compile_only=True)).execution_id
    [compiled] = pump(sched)
    sched.finish(compile_id, compiled.attempt, DONE)
    [blocker] = submit(sched, 1)
    [held] = pump(sched)
    user = sched.submit(Submit(handler="h", params={}, compile_artifact_id=compile_id))
    sched.drain()
    clock.advance(11.0)
    sched.finish(blocker, held.attempt, DONE)
    assert pump(sched) == []
    [blocker_done, failed] = record_events(sched.drain())
    assert blocker_done.record.execution_id == blocker
    assert failed.seq == 2  # queued (1), then straight to the end state
    assert failed.record.status is S.FAILED
    assert failed.record.started_at is not None
    assert failed.record.error is not None
    assert failed.record.error.code is ErrorCode.ARTIFACT_MISSING
    assert sched.lifecycle.get(user.execution_id) == failed.record


# -- 4. an outcome before the worker's report -----------------------------------------------


def test_an_outcome_before_the_report_goes_from_queued_to_its_end_in_one_event() -> None:
    sched = scheduler(slots=4)
    a, b = submit(sched, 2)
    first, second = pump(sched)
    sched.drain()
    sched.finish(a, first.attempt, DONE)
    failed: JobOutcome = {
        "kind": "failed",
        "result": None,
        "error": {"code": "handler_error", "message": "boom", "traceback": None},
        "reports": 1,
    }
    sched.finish(b, second.attempt, failed)
    done, broken = record_events(sched.drain())
    assert (done.seq, done.record.status, done.record.result) == (2, S.COMPLETE, {"ok": True})
    assert done.record.started_at is not None
    assert done.record.worker_pid is None
    assert (broken.seq, broken.record.status) == (2, S.FAILED)
    assert sched.counters.completed == sched.counters.failed == 1
    # The report that was on its way arrives late: dropped, nothing changes.
    sched.worker_started(a, 101)
    assert sched.drain() == []
    assert sched.counters.progress_dropped == 1
    assert status(sched, a) is S.COMPLETE


# -- 5. cancelling before the start ---------------------------------------------------------


def test_cancelling_a_dispatched_attempt_keeps_its_slot_until_the_executor_reports() -> None:
    sched = scheduler(slots=2)
    a, b, c = submit(sched, 3)
    first, _ = pump(sched)
    sched.drain()
    reply = sched.cancel(a)
    assert (reply.changed, reply.status) == (True, S.CANCELLED)
    effects = sched.drain()
    assert Publish("__cancel__", CancelNotice(execution_id=a, force=False)) in effects
    [event] = record_events(effects)
    assert (event.seq, event.record.status) == (2, S.CANCELLED)  # queued → cancelled
    assert [q.execution_id for q in sched.queued_entries()] == [b, c]
    assert sched.next_dispatch() is None  # the worker may be about to take it
    sched.tick()
    assert Publish("__cancel__", CancelNotice(execution_id=a, force=False)) in sched.drain()
    # The worker saw the notice before starting the handler and reports it cancelled.
    sched.worker_started(a, 101)
    sched.finish(
        a,
        first.attempt,
        {"kind": "cancelled", "result": None, "error": None, "reports": 1},
    )
    assert record_events(sched.drain()) == []
    [nxt] = pump(sched)
    assert nxt.execution_id == c


def test_a_forced_cancel_before_the_start_ends_the_worker_once_it_reports() -> None:
    sched = scheduler(slots=2)
    [eid] = submit(sched, 1)
    pump(sched)
    sched.drain()
    sched.cancel(eid, force=True)
    effects = sched.drain()
    assert Publish("__cancel__", CancelNotice(execution_id=eid, force=True)) in effects
    assert not any(isinstance(e, KillWorker) for e in effects)  # no pid known yet
    sched.worker_started(eid, 777)
    assert sched.drain() == [KillWorker(777, eid)]


def test_graceful_shutdown_cancels_dispatched_and_undispatched_alike() -> None:
    sched = scheduler(slots=2)
    running, dispatched, waiting = submit(sched, 3)
    pump(sched)
    sched.worker_started(running, 101)
    sched.drain()
    assert sched.begin_shutdown(force=False) == [dispatched, waiting]
    notices = [
        e.message
        for e in sched.drain()
        if isinstance(e, Publish) and isinstance(e.message, CancelNotice)
    ]
    assert notices == [CancelNotice(execution_id=dispatched, force=False)]
    assert [status(sched, e) for e in (running, dispatched, waiting)] == [
        S.RUNNING,
        S.CANCELLED,
        S.CANCELLED,
    ]
    assert not sched.drained  # both attempts are still on the executor


def test_forced_shutdown_ends_a_dispatched_attempt_when_its_worker_reports() -> None:
    sched = scheduler(slots=2)
    running, dispatched = submit(sched, 2)
    pump(sched)
    sched.worker_started(running, 101)
    sched.drain()
    assert sched.begin_shutdown(force=True) == [dispatched, running]
    effects = sched.drain()
    assert KillWorker(101, running) in effects
    assert Publish("__cancel__", CancelNotice(execution_id=dispatched, force=True)) in effects
    sched.worker_started(dispatched, 102)
    assert sched.drain() == [KillWorker(102, dispatched)]


# -- 6. pool breakages ----------------------------------------------------------------------


def test_attempts_that_never_started_restart_first_and_free_when_a_worker_crashed() -> None:
    sched = scheduler(slots=4, max_losses=1)
    crashed, bystander, idle1, idle2, later = submit(sched, 5)
    pump(sched)
    sched.worker_started(crashed, 101)
    sched.worker_started(bystander, 102)
    sched.drain()
    sched.lost(sched.in_flight(), {101: "killed by signal SIGSEGV (11)"}, "broken")
    lost = sched.lifecycle.get(crashed)
    assert lost is not None
    assert (lost.status, lost.worker_pid) == (S.FAILED, 101)
    # A running bystander counts a loss (max_losses=1: it fails); the idle ones do not.
    assert status(sched, bystander) is S.FAILED
    assert [status(sched, e) for e in (idle1, idle2)] == [S.QUEUED, S.QUEUED]
    assert len(record_events(sched.drain())) == 2
    assert [d.execution_id for d in pump(sched)] == [idle1, idle2, later]
    # However often it happens (max_losses=1), as long as another attempt's worker crashed.
    crasher = later
    for pid in (201, 202, 203):
        sched.worker_started(crasher, pid)
        sched.lost(sched.in_flight(), {pid: "killed by signal SIGKILL (9)"}, "broken")
        assert status(sched, crasher) is S.FAILED
        [crasher] = submit(sched, 1)
        assert [d.execution_id for d in pump(sched)] == [idle1, idle2, crasher]
    assert [status(sched, e) for e in (idle1, idle2)] == [S.QUEUED, S.QUEUED]


def test_a_forced_cancel_that_breaks_the_pool_leaves_the_unstarted_unharmed() -> None:
    sched = scheduler(slots=3, max_losses=1)
    victim, idle = submit(sched, 2)
    pump(sched)
    sched.worker_started(victim, 101)
    sched.cancel(victim, force=True)
    assert KillWorker(101, victim) in sched.drain()
    sched.lost(sched.in_flight(), {101: "killed by signal SIGKILL (9)"}, "broken")
    assert status(sched, idle) is S.QUEUED
    [again] = pump(sched)
    assert again.execution_id == idle


def test_an_unexplained_breakage_counts_against_every_lost_attempt() -> None:
    # A handler that ends its process before its report gets out looks like this: the pool
    # breaks, the dead worker ran one of several unreported attempts, which one is unknown.
    sched = scheduler(slots=3, max_losses=2)
    ids = submit(sched, 3)
    pump(sched)
    sched.lost(sched.in_flight(), {555: "exited with code 1"}, "broken")
    assert [status(sched, e) for e in ids] == [S.QUEUED] * 3  # nobody blamed, all restart
    assert [d.execution_id for d in pump(sched)] == ids
    sched.drain()
    sched.lost(sched.in_flight(), {556: "exited with code 1"}, "broken")
    assert [status(sched, e) for e in ids] == [S.FAILED] * 3
    events = record_events(sched.drain())
    assert [(e.seq, e.record.status) for e in events] == [(2, S.FAILED)] * 3
    assert all(e.record.error and "2 times" in e.record.error.message for e in events)
    assert sched.counters.failed == 3


def test_a_pool_found_broken_at_submit_is_bounded_by_max_losses() -> None:
    sched = scheduler(slots=2, max_losses=3)
    [eid] = submit(sched, 1)
    for _ in range(3):
        [dispatch] = pump(sched)
        sched.lost([(eid, dispatch.attempt)], {}, "BrokenProcessPool()")
    assert status(sched, eid) is S.FAILED


def test_a_dead_pid_is_blamed_on_the_one_restarted_attempt_without_a_report() -> None:
    sched = scheduler(slots=3)
    restarted, fresh = submit(sched, 2)
    pump(sched)
    sched.worker_started(restarted, 101)
    sched.lost(sched.in_flight(), {}, "broken")  # unexplained: both restart
    assert [d.execution_id for d in pump(sched)] == [restarted, fresh]
    # The restarted attempt's new worker dies before reporting; the fresh one is unreported
    # too, but it never ran before: the restarted one (record running) is the suspect.
    sched.lost(sched.in_flight(), {909: "killed by signal SIGKILL (9)"}, "broken")
    record = sched.lifecycle.get(restarted)
    assert record is not None
    assert record.status is S.FAILED
    assert record.error is not None
    assert "909" in record.error.message
    assert status(sched, fresh) is S.QUEUED


def test_an_unreported_attempt_is_blamed_only_when_it_is_alone_in_flight() -> None:
    sched = scheduler(slots=3)
    started, a, b = submit(sched, 3)
    pump(sched)
    sched.worker_started(started, 101)
    # One unknown dead worker, two unreported attempts: which one it ran (if any) is unknown.
    sched.lost(sched.in_flight(), {909: "exited with code 3"}, "broken")
    assert [status(sched, e) for e in (started, a, b)] == [S.RUNNING, S.QUEUED, S.QUEUED]
    sched.cancel(b)
    pump(sched)
    sched.worker_started(started, 102)
    # Still ambiguous with a single unreported attempt: the dead worker may have been idle
    # while the attempt waited in the executor's queue.
    sched.lost(sched.in_flight(), {910: "exited with code 3"}, "broken")
    assert [status(sched, e) for e in (started, a)] == [S.RUNNING, S.QUEUED]
    sched.cancel(started)
    [again] = pump(sched)
    assert again.execution_id == a
    # Alone in flight, it is the one that ran in the only dead worker.
    sched.lost(sched.in_flight(), {911: "exited with code 3"}, "broken")
    record = sched.lifecycle.get(a)
    assert record is not None
    assert (record.status, record.worker_pid) == (S.FAILED, 911)
    assert record.error is not None
    assert "911 exited with code 3" in record.error.message
