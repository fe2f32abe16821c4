"""Executions on a real server with real worker processes: progress, results, failures, worker
loss, cancellation (cooperative and forced), late results, compile artifacts, worker figures.

Every wait is for an event or a reply, under a deadline; handlers that block first report a
`started` progress update, which the tests wait for."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import psutil
import pytest

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ErrorCode,
    ErrorReply,
    ExecutionEvent,
    Ping,
    Pong,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.testing import serve_and_connect

S = ExecutionStatus


def test_progress_arrives_in_sequence_before_the_result() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            eid = await peer.submit("report", n=20, axes=["A01", "A02", "B01"])
            record = await peer.wait_final(eid)
            assert record.status is S.COMPLETE
            assert record.result == {"reported": 20}
            assert record.worker_pid is not None
            assert record.worker_pid != os.getpid()
            assert record.submitted_at <= record.started_at <= record.finished_at  # type: ignore[operator]
            seen = peer.events_of(eid)
            assert [e.seq for e in seen] == list(range(1, 24))
            kinds = ["progress" if isinstance(e, ProgressUpdate) else e.record.status for e in seen]
            assert kinds == [S.QUEUED, S.RUNNING, *["progress"] * 20, S.COMPLETE]
            progress = [e for e in seen if isinstance(e, ProgressUpdate)]
            assert [p.completed for p in progress] == list(range(1, 21))
            assert progress[-1].percent == 100.0
            snapshot = await peer.status(eid)
            assert snapshot.seq == 23
            assert snapshot.execution == record
            assert snapshot.latest_progress == progress[-1]
            assert sorted(a.axis_id for a in snapshot.axes) == ["A01", "A02", "B01"]

    asyncio.run(scenario())


def test_results_failures_and_bad_results() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (_, peer):
            array_id = await peer.submit("array_result", size=100_000)
            fail_id = await peer.submit("fail", message="no such well")
            bad_id = await peer.submit("bad_result")
            done = await peer.wait_final(array_id)
            assert done.status is S.COMPLETE
            image = done.result["image"]
            assert isinstance(image, np.ndarray)
            assert image.dtype == np.float64
            np.testing.assert_array_equal(image, np.arange(100_000, dtype=np.float64))
            failed = await peer.wait_final(fail_id)
            assert failed.status is S.FAILED
            assert failed.error is not None
            assert failed.error.code is ErrorCode.HANDLER_ERROR
            assert "no such well" in failed.error.message
            assert failed.error.traceback
            assert "RuntimeError" in failed.error.traceback
            bad = await peer.wait_final(bad_id)
            assert bad.status is S.FAILED
            assert bad.error is not None
            assert bad.error.code is ErrorCode.HANDLER_ERROR
            assert "not JSON" in bad.error.message
            assert "result.oops" in bad.error.message
            counters = (await peer.server_status()).counters
            assert (counters.completed, counters.failed) == (1, 2)

    asyncio.run(scenario())


def test_queue_positions_are_exact_and_a_queued_cancel_never_starts() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            blocker = await peer.submit("wait_for_cancel")
            await peer.started_pid(blocker)
            replies = [
                await peer.request(Submit(handler="echo", params={"i": i})) for i in range(3)
            ]
            assert [r.queue_position for r in replies] == [1, 2, 3]
            ids = [r.execution_id for r in replies]
            snapshot = await peer.server_status()
            assert [q.execution_id for q in snapshot.queued] == ids
            assert [q.queue_position for q in snapshot.queued] == [1, 2, 3]
            assert [r.execution_id for r in snapshot.running] == [blocker]
            gone = await peer.cancel(ids[1])
            assert gone.changed
            assert gone.status is S.CANCELLED
            snapshot = await peer.server_status()
            assert [(q.execution_id, q.queue_position) for q in snapshot.queued] == [
                (ids[0], 1),
                (ids[2], 2),
            ]
            await peer.cancel(blocker)
            for eid in (ids[0], ids[2]):
                assert (await peer.wait_final(eid)).status is S.COMPLETE
            statuses = [
                e.record.status for e in peer.events_of(ids[1]) if isinstance(e, ExecutionEvent)
            ]
            assert statuses == [S.QUEUED, S.CANCELLED]

    asyncio.run(scenario())


def test_a_worker_killed_mid_job_fails_that_execution_only() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (_, peer):
            victim = await peer.submit("uncooperative", seconds=60)
            neighbour = await peer.submit("sleep", seconds=0.5)
            queued = await peer.submit("sleep", seconds=0.1)
            pid = await peer.started_pid(victim)
            await peer.started_pid(neighbour)
            os.kill(pid, signal.SIGKILL)
            lost = await peer.wait_final(victim)
            assert lost.status is S.FAILED
            assert lost.error is not None
            assert lost.error.code is ErrorCode.WORKER_LOST
            assert str(pid) in lost.error.message
            assert "SIGKILL" in lost.error.message
            # The server and the other executions go on.
            assert (await peer.wait_final(neighbour)).status is S.COMPLETE
            assert (await peer.wait_final(queued)).status is S.COMPLETE
            assert isinstance(await peer.request(Ping()), Pong)
            again = await peer.submit("echo", ok=True)
            assert (await peer.wait_final(again)).result == {"ok": True}
            assert pid not in {w.pid for w in (await peer.server_status()).workers}

    asyncio.run(scenario())


def test_a_handler_that_ends_its_own_worker_fails_with_worker_lost() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            eid = await peer.submit("exit_worker", how="exit")
            record = await peer.wait_final(eid)
            assert record.status is S.FAILED
            assert record.error is not None
            assert record.error.code is ErrorCode.WORKER_LOST
            assert "exited with code 3" in record.error.message
            after = await peer.submit("echo", x=1)
            assert (await peer.wait_final(after)).status is S.COMPLETE

    asyncio.run(scenario())


def test_cancel_one_of_three_running_executions() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=3) as (_, peer):
            ids = [await peer.submit("sleep", seconds=1.0) for _ in range(3)]
            for eid in ids:
                await peer.started_pid(eid)
            reply = await peer.cancel(ids[1])
            assert reply.changed
            assert reply.status is S.CANCELLED
            record = await peer.wait_final(ids[1])
            assert record.status is S.CANCELLED
            assert record.error is not None
            assert record.error.code is ErrorCode.CANCELLED
            assert (await peer.wait_final(ids[0])).status is S.COMPLETE
            assert (await peer.wait_final(ids[2])).status is S.COMPLETE
            assert (await peer.status(ids[1])).execution == record  # still cancelled
            again = await peer.cancel(ids[1])
            assert (again.changed, again.status) == (False, S.CANCELLED)
            done = await peer.cancel(ids[0])
            assert (done.changed, done.status) == (False, S.COMPLETE)

    asyncio.run(scenario())


def test_force_cancel_ends_that_worker_and_the_others_complete() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=3) as (_, peer):
            target = await peer.submit("uncooperative", seconds=60)
            others = [await peer.submit("sleep", seconds=0.5) for _ in range(2)]
            pid = await peer.started_pid(target)
            for eid in others:
                await peer.started_pid(eid)
            process = psutil.Process(pid)
            reply = await peer.cancel(target, force=True)
            assert reply.changed
            assert reply.status is S.CANCELLED
            await asyncio.to_thread(process.wait, 10)  # the worker process is ended
            for eid in others:
                assert (await peer.wait_final(eid)).status is S.COMPLETE
            record = (await peer.status(target)).execution
            assert record.status is S.CANCELLED
            assert record.error is not None
            assert record.error.code is ErrorCode.CANCELLED

    asyncio.run(scenario())


def test_a_result_returned_after_cancellation_is_ignored() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            eid = await peer.submit("ignore_cancel")
            await peer.started_pid(eid)
            assert (await peer.cancel(eid)).changed
            # One worker: the next execution starts only once the late result came back.
            follower = await peer.submit("echo", n=1)
            assert (await peer.wait_final(follower)).status is S.COMPLETE
            record = (await peer.status(eid)).execution
            assert record.status is S.CANCELLED
            assert record.result is None
            statuses = [
                e.record.status for e in peer.events_of(eid) if isinstance(e, ExecutionEvent)
            ]
            assert statuses == [S.QUEUED, S.RUNNING, S.CANCELLED]

    asyncio.run(scenario())


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_compile_artifacts_are_used_and_expire() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with serve_and_connect(workers=1, artifact_ttl=60.0, clock=clock) as (_, peer):
            compiled = await peer.request(
                Submit(handler="compile", params={"steps": ["blur", "count"]}, compile_only=True)
            )
            assert isinstance(compiled, SubmitReply)
            artifact_id = compiled.execution_id
            assert (await peer.wait_final(artifact_id)).result == {
                "plan": {"steps": ["blur", "count"], "compiled_by": "test"}
            }
            run = await peer.request(
                Submit(handler="execute", params={}, compile_artifact_id=artifact_id)
            )
            assert isinstance(run, SubmitReply)
            record = await peer.wait_final(run.execution_id)
            assert record.result == {"executed": ["blur", "count"], "compile_only": False}
            assert record.compile_artifact_id == artifact_id
            # Expires before it is handed to a worker: the execution fails artifact_missing.
            # (The one worker runs a blocker and holds the next attempt, a second blocker.)
            blocker = await peer.submit("wait_for_cancel")
            await peer.started_pid(blocker)
            held = await peer.submit("wait_for_cancel")
            late = await peer.request(
                Submit(handler="execute", params={}, compile_artifact_id=artifact_id)
            )
            assert isinstance(late, SubmitReply)
            assert late.queue_position == 2
            clock.now += 61.0
            await peer.cancel(held)
            await peer.cancel(blocker)
            expired = await peer.wait_final(late.execution_id)
            assert expired.status is S.FAILED
            assert expired.error is not None
            assert expired.error.code is ErrorCode.ARTIFACT_MISSING
            # And it is refused at submission from now on.
            refused = await peer.request(
                Submit(handler="execute", params={}, compile_artifact_id=artifact_id)
            )
            assert isinstance(refused, ErrorReply)
            assert refused.code is ErrorCode.ARTIFACT_MISSING
            assert refused.details == {"field": "submit.compile_artifact_id"}

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_worker_figures_are_real() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            eid = await peer.submit("burn_cpu", timeout=20)
            pid = await peer.started_pid(eid)
            async with asyncio.timeout(15):
                while True:
                    workers = (await peer.server_status()).workers
                    mine = [w for w in workers if w.pid == pid]
                    if mine and mine[0].cpu_percent > 0:
                        break
            assert mine[0].execution_id == eid
            assert mine[0].memory_mb > 1.0
            await peer.cancel(eid)
            assert (await peer.wait_final(eid)).status is S.CANCELLED

    asyncio.run(scenario())


def test_a_result_too_large_for_any_message_fails_clearly() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1, max_message_size=256 * 1024) as (_, peer):
            big = await peer.submit("array_result", size=100_000)  # 800 kB of float64
            record = await peer.wait_final(big)
            assert record.status is S.FAILED
            assert record.error is not None
            assert record.error.code is ErrorCode.HANDLER_ERROR
            assert "800" in record.error.message
            assert "max_message_size" in record.error.message
            small = await peer.submit("array_result", size=1000)
            assert (await peer.wait_final(small)).status is S.COMPLETE

    asyncio.run(scenario())
