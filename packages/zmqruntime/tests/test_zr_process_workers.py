"""The server's own worker processes fed over ZeroMQ (docs/protocol.md §7), end to end.

Real servers, real spawned workers, real sockets: no head-of-line blocking behind a long job,
a killed worker costs only its own attempt and is replaced, forged or stale reports on the
progress channel change nothing, a cancelled attempt still waiting in the server is never
sent (and a forced cancel of it ends no worker), a start and an end in one batch of reports
leave no gap in `seq`, workers exit with their server (gracefully or killed), and results or
errors too large for a message fail cleanly instead of hanging.

Every wait is for an event or a reply under a deadline. Forged reports are followed, on the
same PUSH socket, by a progress report for another running execution (the "marker"): one
connection is read in order, so once the marker's event arrives every report sent before it
has been handled.

Three of these tests caught bugs when they were written; their docstrings say which.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import zmq
import zmq.asyncio

from zmqruntime.codec import WireCodec
from zmqruntime.connection import ConnectionInfo
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    CancelNotice,
    ErrorCode,
    ExecutionEvent,
    ExecutionRecord,
    Heartbeat,
    JobEnded,
    Message,
    WorkerStarted,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server import ServerProcess, process_workers, start_server_process
from zmqruntime.server.server import RECORD_ALLOWANCE, ExecutionServer
from zmqruntime.server.worker_runtime import result_size
from zmqruntime.testing import SAMPLE_HANDLERS, RawPeer, example_progress, serve_and_connect

S = ExecutionStatus
#: Small enough that over-large results and errors are cheap to make.
SMALL_MESSAGES = 256 * 1024

pytestmark = pytest.mark.timeout(30)


# -- requests -----------------------------------------------------------------------------


async def worker_pids(peer: RawPeer) -> set[int]:
    return {worker.pid for worker in (await peer.server_status()).workers}


async def next_heartbeat(peer: RawPeer) -> None:
    """Wait for a heartbeat newer than every one received so far."""
    last = max((e.message.seq for e in peer.events if isinstance(e.message, Heartbeat)), default=-1)
    await peer.wait_event(lambda e: isinstance(e.message, Heartbeat) and e.message.seq > last)


async def until(
    peer: RawPeer, check: Callable[[], Awaitable[bool]], what: str, *, timeout: float = 10.0
) -> None:
    """Re-run `check` once per heartbeat until it returns True, under a deadline."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await next_heartbeat(peer)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None


def record_statuses(peer: RawPeer, execution_id: str) -> list[ExecutionStatus]:
    return [e.record.status for e in peer.events_of(execution_id) if isinstance(e, ExecutionEvent)]


def cancel_notices(peer: RawPeer, execution_id: str) -> int:
    return sum(
        1
        for e in peer.events
        if e.topic == b"__cancel__"
        and isinstance(e.message, CancelNotice)
        and e.message.execution_id == execution_id
    )


def spawned_children() -> set[int]:
    """Pids of this process's children started by multiprocessing's spawn (our workers; not
    its resource tracker, which outlives every server)."""
    found: set[int] = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("spawn_main" in part for part in child.cmdline()):
                found.add(child.pid)
    return found


def gone(pid: int) -> bool:
    """True if no process, not even a zombie (a child nobody reaped), has this pid."""
    return not psutil.pid_exists(pid)


# -- forging reports ------------------------------------------------------------------------


class Forger:
    """A PUSH socket on the server's progress channel, signing with the server's key (what a
    buggy or stale worker, or anyone holding the connection file, could send)."""

    def __init__(self, info: ConnectionInfo, peer: RawPeer) -> None:
        self.codec = WireCodec(info.key)
        self.peer = peer
        self.context = zmq.asyncio.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(info.progress)
        self._markers = itertools.count(1)

    async def send(self, message: Message) -> None:
        await self.push.send_multipart(self.codec.encode(message))

    async def marker(self, running_execution_id: str) -> None:
        """Send a progress report for a running execution and wait for its event: every
        report sent before it on this socket has been handled by then."""
        text = f"marker {next(self._markers)}"
        update = ProgressUpdate.from_wire(
            example_progress(execution_id=running_execution_id, message=text)
        )
        await self.send(update)
        await self.peer.wait_event(
            lambda e: isinstance(e.message, ProgressUpdate) and e.message.message == text
        )

    def close(self) -> None:
        self.push.close(linger=0)
        self.context.term()


@contextlib.asynccontextmanager
async def forger(info: ConnectionInfo, peer: RawPeer) -> AsyncIterator[Forger]:
    made = Forger(info, peer)
    try:
        yield made
    finally:
        made.close()


def forged_end(execution_id: str, attempt: int, pid: int) -> JobEnded:
    return JobEnded(
        execution_id=execution_id,
        attempt=attempt,
        pid=pid,
        status=S.COMPLETE,
        result={"forged": True},
    )


def attempt_of(server: ExecutionServer, execution_id: str) -> int:
    """The server's number of the execution's attempt in flight (what a worker was told)."""
    return dict(server.scheduler.in_flight())[execution_id]


# -- scheduling -----------------------------------------------------------------------------


def test_short_jobs_pass_a_long_one_on_the_other_worker() -> None:
    """No head-of-line blocking: the jobs behind a long one all run on the idle worker."""

    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (_, peer):
            long = await peer.submit("uncooperative", seconds=60)
            shorts = [await peer.submit("echo", i=i) for i in range(6)]
            long_pid = await peer.started_pid(long)
            records = [await peer.wait_final(eid) for eid in shorts]
            assert [r.status for r in records] == [S.COMPLETE] * 6
            assert [r.result for r in records] == [{"i": i} for i in range(6)]
            short_pids = {r.worker_pid for r in records}
            assert len(short_pids) == 1, short_pids
            (short_pid,) = short_pids
            assert short_pid != long_pid
            # The long one is still running, on its own worker, while all of that happened.
            record = (await peer.status(long)).execution
            assert (record.status, record.worker_pid) == (S.RUNNING, long_pid)
            overview = await peer.server_status()
            assert [r.execution_id for r in overview.running] == [long]
            assert overview.queued == ()
            assert {w.pid for w in overview.workers} == {long_pid, short_pid}

    asyncio.run(scenario())


# -- jobs sent ahead ------------------------------------------------------------------------


def ahead_of(server: ExecutionServer) -> dict[int, tuple[str, ...]]:
    """Worker pid → the executions sent ahead to it, in order."""
    workers = server.process_workers
    assert workers is not None
    return workers.sent_ahead()


def assert_ran_after(
    before: ExecutionRecord, after: ExecutionRecord, result: Any, pid: int
) -> None:
    """`after` completed with `result` on worker `pid`, and started no sooner than `before`
    ended."""
    assert (after.status, after.result, after.worker_pid) == (S.COMPLETE, result, pid)
    assert before.finished_at is not None
    assert after.started_at is not None
    assert after.started_at >= before.finished_at


@pytest.fixture
def generous_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any job counts as quick, however slow this machine is: the tests below decide what
    is sent ahead by what they submit, not by how fast the jobs happen to run."""
    monkeypatch.setattr(process_workers, "AHEAD_BELOW", 30.0)


async def known_quick(peer: RawPeer, handler: str, **params: Any) -> None:
    """Run `handler` once, so the server has seen how long it takes."""
    assert (await peer.wait_final(await peer.submit(handler, **params))).status is S.COMPLETE


async def echo_sent_ahead(
    server: ExecutionServer, peer: RawPeer, pid: int, **params: Any
) -> tuple[str, str]:
    """Submit a 0.5 s `sleep` (a handler known to be quick) and an `echo` of `params`: the
    echo goes ahead to worker `pid` while the sleep runs there. Their execution ids."""
    long = await peer.submit("sleep", seconds=0.5)
    ahead = await peer.submit("echo", **params)
    assert await peer.started_pid(long) == pid
    assert ahead_of(server) == {pid: (ahead,)}
    return long, ahead


@pytest.mark.usefixtures("generous_ahead")
def test_a_job_sent_ahead_starts_when_the_one_before_it_ends_and_a_cancel_skips_it() -> None:
    """A quick worker is sent its next job while it runs one. That job stays `queued`, with
    no pid, until the end of the one before it arrives; then it runs on the same worker. A
    cancel reaches it there: the worker never runs it, and no worker is killed for it."""

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "sleep", seconds=0, quiet=True)
            (pid,) = await worker_pids(peer)

            long, ahead = await echo_sent_ahead(server, peer, pid, ahead=True)
            waiting = (await peer.status(ahead)).execution
            assert (waiting.status, waiting.worker_pid, waiting.started_at) == (
                S.QUEUED,
                None,
                None,
            )
            before = await peer.wait_final(long)
            assert_ran_after(before, await peer.wait_final(ahead), {"ahead": True}, pid)
            assert record_statuses(peer, ahead) in (
                [S.QUEUED, S.RUNNING, S.COMPLETE],
                [S.QUEUED, S.COMPLETE],
            )

            long, doomed = await echo_sent_ahead(server, peer, pid, doomed=True)
            assert (await peer.cancel(doomed)).changed
            skipped = await peer.wait_final(doomed)
            assert (skipped.status, skipped.worker_pid, skipped.started_at) == (
                S.CANCELLED,
                None,
                None,
            )
            assert (await peer.wait_final(long)).status is S.COMPLETE

            async def nothing_in_flight() -> bool:
                return not server.scheduler.in_flight()

            await until(peer, nothing_in_flight, "the skipped job's end from the worker")
            assert ahead_of(server) == {}
            assert await worker_pids(peer) == {pid}  # nobody was killed
            again = await peer.wait_final(await peer.submit("echo", again=True))
            assert (again.status, again.worker_pid) == (S.COMPLETE, pid)
            assert record_statuses(peer, doomed) == [S.QUEUED, S.CANCELLED]

    asyncio.run(scenario())


@pytest.mark.usefixtures("generous_ahead")
def test_a_worker_that_dies_with_a_job_ahead_loses_only_the_job_it_ran() -> None:
    """The job sent ahead never started: it runs on the replacement, with no trace of the
    loss, while the one the dead worker ran fails with `worker_lost`."""

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "uncooperative", seconds=0)
            (pid,) = await worker_pids(peer)
            victim = await peer.submit("uncooperative", seconds=60)
            ahead = await peer.submit("echo", ahead=True)
            assert await peer.started_pid(victim) == pid
            assert ahead_of(server) == {pid: (ahead,)}

            os.kill(pid, signal.SIGKILL)
            lost = await peer.wait_final(victim)
            assert (lost.status, lost.worker_pid) == (S.FAILED, pid)
            assert lost.error is not None
            assert lost.error.code is ErrorCode.WORKER_LOST
            done = await peer.wait_final(ahead)
            assert (done.status, done.result) == (S.COMPLETE, {"ahead": True})
            assert done.worker_pid not in (None, pid)
            assert record_statuses(peer, ahead) in (
                [S.QUEUED, S.RUNNING, S.COMPLETE],
                [S.QUEUED, S.COMPLETE],
            )
            counters = (await peer.server_status()).counters
            assert (counters.completed, counters.failed) == (2, 1)

    asyncio.run(scenario())


@pytest.mark.usefixtures("generous_ahead")
def test_a_forced_cancel_of_a_job_ahead_ends_its_worker_only_after_the_job_before_it() -> None:
    """The server cannot know whether the worker saw the notice in time, so it ends the
    worker, but only once the job before has ended: that one completes, the cancelled one
    never runs, and the replacement takes the next job."""

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "sleep", seconds=0, quiet=True)
            (pid,) = await worker_pids(peer)
            long, doomed = await echo_sent_ahead(server, peer, pid, doomed=True)
            assert (await peer.cancel(doomed, force=True)).changed
            skipped = await peer.wait_final(doomed)
            assert (skipped.status, skipped.worker_pid) == (S.CANCELLED, None)
            before = await peer.wait_final(long)
            assert (before.status, before.worker_pid) == (S.COMPLETE, pid)
            after = await peer.wait_final(await peer.submit("echo", after=True))
            assert after.status is S.COMPLETE
            assert after.worker_pid not in (None, pid)
            assert record_statuses(peer, doomed) == [S.QUEUED, S.CANCELLED]

    asyncio.run(scenario())


@pytest.mark.usefixtures("generous_ahead")
def test_up_to_AHEAD_DEPTH_jobs_go_ahead_to_a_quick_worker_and_run_there_in_order() -> None:
    """Behind a quick job, a worker is sent up to `AHEAD_DEPTH` more; the next waits in the
    server. Each starts only once the one before it has ended."""
    depth = process_workers.AHEAD_DEPTH

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "sleep", seconds=0, quiet=True)
            await known_quick(peer, "echo")
            (pid,) = await worker_pids(peer)
            long = await peer.submit("sleep", seconds=0.5)
            echoes = [await peer.submit("echo", n=n) for n in range(depth + 2)]
            assert await peer.started_pid(long) == pid
            assert ahead_of(server) == {pid: tuple(echoes[:depth])}
            assert (await peer.status(echoes[-1])).execution.status is S.QUEUED
            previous = await peer.wait_final(long)
            for n, echo in enumerate(echoes):
                record = await peer.wait_final(echo)
                assert_ran_after(previous, record, {"n": n}, pid)
                previous = record

    asyncio.run(scenario())


@pytest.mark.usefixtures("generous_ahead")
def test_jobs_ahead_go_to_the_worker_with_the_fewest_ahead() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (server, peer):
            await known_quick(peer, "sleep", seconds=0, quiet=True)
            await known_quick(peer, "echo")
            workers = server.process_workers
            assert workers is not None

            async def both_ready() -> bool:
                return len(workers.ready_pids()) == 2

            await until(peer, both_ready, "both workers ready")
            longs = [await peer.submit("sleep", seconds=0.5) for _ in range(2)]
            echoes = [await peer.submit("echo", n=n) for n in range(2)]
            pids = {await peer.started_pid(long) for long in longs}
            assert len(pids) == 2
            ahead = ahead_of(server)
            assert set(ahead) == pids
            assert sorted(ahead.values()) == sorted((echo,) for echo in echoes)

    asyncio.run(scenario())


def test_no_job_goes_ahead_behind_jobs_expected_to_take_AHEAD_BELOW_in_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job ahead of a handler whose last run was slow holds up the worker as much as a
    running one: nothing more goes ahead behind it."""
    monkeypatch.setattr(process_workers, "AHEAD_BELOW", 0.4)  # room for a slow machine

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "sleep", seconds=0, quiet=True)
            await known_quick(peer, "uncooperative", seconds=0.6)  # known to take 0.6 s
            (pid,) = await worker_pids(peer)
            long = await peer.submit("sleep", seconds=1.0)
            slow = await peer.submit("uncooperative", seconds=0)
            last = await peer.submit("echo", last=True)
            assert await peer.started_pid(long) == pid
            assert ahead_of(server) == {pid: (slow,)}
            for execution_id in (long, slow, last):
                record = await peer.wait_final(execution_id)
                assert (record.status, record.worker_pid) == (S.COMPLETE, pid)

    asyncio.run(scenario())


def test_no_job_is_sent_ahead_of_a_job_not_known_to_be_quick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job sent ahead cannot be taken back, so none goes behind a job of a handler never
    seen to end, or of one whose last run took `AHEAD_BELOW` or more, nor behind a job that
    has already run that long: it waits in the server and goes to whichever worker frees
    first."""
    monkeypatch.setattr(process_workers, "AHEAD_BELOW", 0.1)

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            await known_quick(peer, "echo")  # quick jobs of another handler count for nothing
            first = await peer.submit("sleep", seconds=0.3)
            behind = await peer.submit("echo", behind=True)
            pid = await peer.started_pid(first)
            assert ahead_of(server) == {}
            assert (await peer.wait_final(behind)).status is S.COMPLETE  # `sleep` took 0.3 s

            slow = await peer.submit("sleep", seconds=0.3)
            after = await peer.submit("echo", after=True)
            assert await peer.started_pid(slow) == pid
            assert ahead_of(server) == {}, "behind a handler whose last run was slow"
            assert (await peer.wait_final(after)).status is S.COMPLETE

            await known_quick(peer, "sleep", seconds=0, quiet=True)
            slow = await peer.submit("sleep", seconds=0.8)
            assert await peer.started_pid(slow) == pid
            await asyncio.sleep(3 * process_workers.AHEAD_BELOW)
            late = await peer.submit("echo", late=True)
            assert ahead_of(server) == {}, "behind a job that has run AHEAD_BELOW"
            done = await peer.wait_final(late)
            assert (done.status, done.worker_pid) == (S.COMPLETE, pid)

    asyncio.run(scenario())


def test_a_killed_worker_fails_only_its_own_attempt_and_is_replaced() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (_, peer):
            victim = await peer.submit("uncooperative", seconds=60)
            neighbour = await peer.submit("wait_for_cancel", timeout=60)
            waiting = await peer.submit("echo", waited=True)  # both workers are busy
            victim_pid = await peer.started_pid(victim)
            neighbour_pid = await peer.started_pid(neighbour)
            assert (await peer.status(waiting)).execution.status is S.QUEUED

            os.kill(victim_pid, signal.SIGKILL)
            lost = await peer.wait_final(victim)
            assert lost.status is S.FAILED
            assert lost.error is not None
            assert lost.error.code is ErrorCode.WORKER_LOST
            assert str(victim_pid) in lost.error.message
            assert "SIGKILL" in lost.error.message
            assert lost.worker_pid == victim_pid

            # The waiting attempt was never sent to the dead worker: it runs, once, on its
            # replacement (the neighbour is still busy), with no trace of the loss.
            done = await peer.wait_final(waiting)
            assert done.status is S.COMPLETE
            assert done.result == {"waited": True}
            replacement = done.worker_pid
            assert replacement is not None
            assert replacement not in {victim_pid, neighbour_pid}
            assert record_statuses(peer, waiting) in (
                [S.QUEUED, S.RUNNING, S.COMPLETE],
                [S.QUEUED, S.COMPLETE],
            )
            assert await worker_pids(peer) == {neighbour_pid, replacement}
            assert gone(victim_pid)  # reaped, not a zombie
            assert (await peer.status(neighbour)).execution.status is S.RUNNING

            again = await peer.submit("echo", after=True)
            record = await peer.wait_final(again)
            assert (record.status, record.worker_pid) == (S.COMPLETE, replacement)
            counters = (await peer.server_status()).counters
            assert (counters.completed, counters.failed) == (2, 1)

    asyncio.run(scenario())


# -- forged and stale reports ---------------------------------------------------------------


def test_forged_or_stale_reports_are_dropped_and_the_real_outcome_stands() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (server, peer):
            blocker = await peer.submit("wait_for_cancel", timeout=60)
            target = await peer.submit("sleep", seconds=1.0)
            waiting = await peer.submit("echo", real=True)  # waits in the server
            blocker_pid = await peer.started_pid(blocker)
            target_pid = await peer.started_pid(target)
            target_attempt = attempt_of(server, target)
            waiting_attempt = attempt_of(server, waiting)
            malformed = server.counters.rejected_malformed
            dropped = server.counters.progress_dropped
            stranger = os.getpid()
            async with forger(server.connection_info, peer) as forge:
                ends = [
                    forged_end(target, target_attempt, blocker_pid),  # another worker of ours
                    forged_end(target, target_attempt, stranger),  # no worker of ours
                    forged_end(target, target_attempt + 1000, target_pid),  # unknown attempt
                    forged_end(waiting, waiting_attempt, blocker_pid),  # not sent to anyone
                ]
                for end in ends:
                    await forge.send(end)
                stale_starts = [
                    WorkerStarted(execution_id=waiting, pid=stranger, attempt=waiting_attempt + 7),
                    WorkerStarted(execution_id=target, pid=stranger, attempt=target_attempt + 7),
                ]
                for start in stale_starts:
                    await forge.send(start)
                await forge.marker(blocker)
            assert server.counters.rejected_malformed == malformed + len(ends)
            assert server.counters.progress_dropped == dropped + len(stale_starts)

            real = await peer.wait_final(target)
            assert (real.status, real.result) == (S.COMPLETE, {"slept": 1.0})
            assert real.worker_pid == target_pid
            after = await peer.wait_final(waiting)
            assert (after.status, after.result) == (S.COMPLETE, {"real": True})
            assert after.worker_pid == target_pid  # the blocker's worker is still busy
            for eid in (target, waiting):
                records = [e.record for e in peer.events_of(eid) if isinstance(e, ExecutionEvent)]
                assert all(r.worker_pid in (None, target_pid) for r in records), records
                assert all(r.result != {"forged": True} for r in records), records
            assert (await peer.status(blocker)).execution.status is S.RUNNING

    asyncio.run(scenario())


def test_a_job_ended_naming_another_execution_changes_nothing() -> None:
    """A `job_ended` with the right attempt and pid but another `execution_id` is refused
    without taking the attempt off its worker, so the real `job_ended` still ends it. (It
    used to take it off first: the real end was then refused as stale and the execution
    stayed `running` forever.)"""

    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (server, peer):
            blocker = await peer.submit("wait_for_cancel", timeout=60)
            target = await peer.submit("sleep", seconds=2.0)
            await peer.started_pid(blocker)
            target_pid = await peer.started_pid(target)
            attempt = attempt_of(server, target)
            malformed = server.counters.rejected_malformed
            async with forger(server.connection_info, peer) as forge:
                await forge.send(forged_end("f" * 32, attempt, target_pid))
                await forge.marker(blocker)
            assert server.counters.rejected_malformed == malformed + 1
            # Premise: the forged end was handled while the worker still held the attempt.
            assert (await peer.status(target)).execution.status is S.RUNNING
            record = await peer.wait_final(target, timeout=5.0)
            assert (record.status, record.result) == (S.COMPLETE, {"slept": 2.0})

    asyncio.run(scenario())


# -- cancellation ---------------------------------------------------------------------------


def test_cancelling_attempts_waiting_in_the_server_ends_them_at_once_and_kills_nobody() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (server, peer):
            busy = [await peer.submit("uncooperative", seconds=2.5) for _ in range(2)]
            waiting = [await peer.submit("echo", n=n) for n in range(2)]
            pids = [await peer.started_pid(eid) for eid in busy]
            assert len(set(pids)) == 2
            in_flight = dict(server.scheduler.in_flight())
            assert set(waiting) <= set(in_flight)  # dispatched, held back by the server

            gentle = await peer.cancel(waiting[0])
            forced = await peer.cancel(waiting[1], force=True)
            for reply in (gentle, forced):
                assert (reply.changed, reply.status) == (True, S.CANCELLED)
            for eid in waiting:
                record = await peer.wait_final(eid)
                assert record.status is S.CANCELLED
                assert record.error is not None
                assert record.error.code is ErrorCode.CANCELLED
                assert record.worker_pid is None
            # Premise: both workers were still busy all along.
            for eid, pid in zip(busy, pids, strict=True):
                record = (await peer.status(eid)).execution
                assert (record.status, record.worker_pid) == (S.RUNNING, pid)
            # Settled at once: the notice is not re-published with the next heartbeats, and
            # the slots are free for new work.
            for _ in range(3):
                await next_heartbeat(peer)
            assert [cancel_notices(peer, eid) for eid in waiting] == [1, 1]
            assert not set(waiting) & {eid for eid, _ in server.scheduler.in_flight()}

            follower = await peer.submit("echo", follower=True)
            for eid, pid in zip(busy, pids, strict=True):
                record = await peer.wait_final(eid)
                assert (record.status, record.worker_pid) == (S.COMPLETE, pid)
                assert record.result == {"done": True}
            after = await peer.wait_final(follower)
            assert after.status is S.COMPLETE
            assert after.worker_pid in pids
            for eid in waiting:
                assert record_statuses(peer, eid) == [S.QUEUED, S.CANCELLED]
            assert await worker_pids(peer) == set(pids)
            assert all(psutil.pid_exists(pid) for pid in pids)
            assert (await peer.server_status()).counters.cancelled == 2

    asyncio.run(scenario())


# -- event sequence ---------------------------------------------------------------------------


def check_sequence(events: list[ExecutionEvent | ProgressUpdate]) -> list[str]:
    """The kinds of one execution's events, after checking that their `seq` runs 1, 2, 3, …
    and that every progress event lies between its `running` and its end."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), events
    kinds = ["progress" if isinstance(e, ProgressUpdate) else e.record.status.value for e in events]
    assert kinds[0] == "queued"
    assert kinds[-1] in {"complete", "failed", "cancelled"}
    if "progress" in kinds:
        first = kinds.index("progress")
        assert kinds[:first] == ["queued", "running"], kinds
        assert set(kinds[first:-1]) == {"progress"}, kinds
    else:
        assert kinds[1:-1] in ([], ["running"]), kinds
    return kinds


def test_event_sequences_have_no_gaps_when_start_and_end_share_a_batch() -> None:
    """A fast job's `worker_started` and `job_ended` often arrive in one batch of reports;
    then only its end is published. Either way its `seq` has no gap, and its end record
    still says when it started and where it ran."""

    async def scenario() -> None:
        async with serve_and_connect(workers=2) as (_, peer):
            fast = [await peer.submit("echo", i=i) for i in range(24)]
            chatty = [await peer.submit("report", n=15, axes=["A01", "B02"]) for _ in range(3)]
            for eid in [*fast, *chatty]:
                record = await peer.wait_final(eid)
                assert record.status is S.COMPLETE
                assert record.started_at is not None
                assert record.worker_pid is not None
            for eid in fast:
                events = peer.events_of(eid)
                check_sequence(events)
                assert (await peer.status(eid)).seq == events[-1].seq
            for eid in chatty:
                events = peer.events_of(eid)
                kinds = check_sequence(events)
                assert kinds == ["queued", "running", *["progress"] * 15, "complete"]
                progress = [e for e in events if isinstance(e, ProgressUpdate)]
                assert [p.completed for p in progress] == list(range(1, 16))
                assert (await peer.status(eid)).seq == 18

    asyncio.run(scenario())


def test_a_job_that_reports_nothing_is_running_while_it_runs() -> None:
    """Our workers send no `worker_started`: the server counts the job started when it hands
    it over and publishes the `running` record (with the worker's pid) itself, shortly after
    (docs/protocol.md §6), without waiting for a report or a status request."""

    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_, peer):
            # Runs until cancelled: its end can only come after the checks below.
            eid = await peer.submit("sleep", seconds=60, quiet=True)
            running = await peer.wait_event(
                lambda e: (
                    isinstance(e.message, ExecutionEvent)
                    and e.message.record.execution_id == eid
                    and e.message.record.status is S.RUNNING
                ),
                timeout=5.0,
            )
            assert isinstance(running.message, ExecutionEvent)
            started = running.message.record
            assert started.worker_pid in await worker_pids(peer)
            assert started.started_at is not None
            await peer.cancel(eid)
            done = await peer.wait_final(eid)
            assert (done.status, done.worker_pid) == (S.CANCELLED, started.worker_pid)
            assert check_sequence(peer.events_of(eid)) == ["queued", "running", "cancelled"]

    asyncio.run(scenario())


# -- worker processes end with the server ---------------------------------------------------


def test_graceful_shutdown_leaves_no_worker_process() -> None:
    """Workers (a replacement among them) finish their jobs, then exit and are reaped."""

    async def scenario() -> set[int]:
        before = spawned_children()
        server = ExecutionServer(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.1)
        info = await server.start()
        try:
            async with RawPeer(info) as peer:
                await peer.ready()
                crash = await peer.submit("exit_worker", how="kill")
                lost = await peer.wait_final(crash)
                assert lost.status is S.FAILED
                assert lost.error is not None
                assert lost.error.code is ErrorCode.WORKER_LOST
                assert lost.worker_pid is not None
                # The holder keeps the surviving worker busy until it is cancelled, so the
                # runner can only start on the replacement, whenever that becomes ready.
                holder = await peer.submit("wait_for_cancel", timeout=30)
                runner = await peer.submit("sleep", seconds=1.0)
                pids = {await peer.started_pid(eid) for eid in (holder, runner)}
                assert len(pids) == 2
                assert lost.worker_pid not in pids
                workers = await worker_pids(peer)
                assert workers == pids
                assert workers <= spawned_children() - before
                await peer.cancel(holder)
                assert (await peer.wait_final(holder)).status is S.CANCELLED
                cancelled = await server.shutdown()
                assert cancelled == []
                # Graceful: the job still running was let finish.
                assert (await peer.wait_final(runner)).status is S.COMPLETE
        finally:
            await server.shutdown(force=True)
        assert server.closed
        assert spawned_children() - before == set()
        return {*pids, lost.worker_pid}

    for pid in asyncio.run(scenario()):
        assert gone(pid), pid


@pytest.fixture
def server_process() -> Iterator[list[ServerProcess]]:
    """Server processes a test started; all stopped and reaped at the end."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.close()


def test_workers_die_with_a_killed_server_idle_busy_and_replaced_alike(
    server_process: list[ServerProcess],
) -> None:
    server = start_server_process(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.1)
    server_process.append(server)

    async def scenario() -> list[psutil.Process]:
        async with RawPeer(server.info) as peer:
            await peer.ready()
            crash = await peer.submit("exit_worker", how="kill")
            dead = (await peer.wait_final(crash)).worker_pid
            assert dead is not None

            async def replaced() -> bool:
                pids = await worker_pids(peer)
                return len(pids) == 2 and dead not in pids

            await until(peer, replaced, "replacement worker")
            busy = await peer.submit("uncooperative", seconds=60)
            busy_pid = await peer.started_pid(busy)
            pids = await worker_pids(peer)
            assert busy_pid in pids
            workers = [psutil.Process(pid) for pid in pids]
            assert all(w.ppid() == server.pid for w in workers)
            return workers

    workers = asyncio.run(scenario())
    server.kill()
    assert server.wait(10) == -signal.SIGKILL
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived their server: {alive}"


# -- sizes ------------------------------------------------------------------------------------


def largest_array_result(limit: int) -> int:
    """The largest `size` whose `array_result` takes at most `limit` bytes."""

    def size_of(n: int) -> int:
        return result_size({"image": np.arange(n, dtype=np.float64), "size": n})

    low, high = 1, limit // 8 + 1
    while low < high:  # the answer lies in [low, high]
        middle = (low + high + 1) // 2
        if size_of(middle) <= limit:
            low = middle
        else:
            high = middle - 1
    assert size_of(low) <= limit < size_of(low + 1)
    return low


def test_results_too_large_for_a_message_fail_and_the_worker_goes_on() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1, max_message_size=SMALL_MESSAGES) as (_, peer):
            limit = SMALL_MESSAGES - RECORD_ALLOWANCE
            size = largest_array_result(limit)
            fits = await peer.wait_final(await peer.submit("array_result", size=size))
            assert fits.status is S.COMPLETE
            np.testing.assert_array_equal(fits.result["image"], np.arange(size, dtype=np.float64))
            pid = fits.worker_pid

            over = await peer.wait_final(await peer.submit("array_result", size=size + 1))
            assert over.status is S.FAILED
            assert over.error is not None
            assert over.error.code is ErrorCode.HANDLER_ERROR
            assert "max_message_size" in over.error.message
            assert str(limit) in over.error.message
            # Params that just fit in a request, echoed back: too large for the event.
            blob = "x" * (SMALL_MESSAGES - 1024)
            echoed = await peer.wait_final(await peer.submit("echo", blob=blob))
            assert echoed.status is S.FAILED
            assert echoed.error is not None
            assert echoed.error.code is ErrorCode.HANDLER_ERROR
            assert "max_message_size" in echoed.error.message

            after = await peer.wait_final(await peer.submit("echo", small=True))
            assert (after.status, after.result) == (S.COMPLETE, {"small": True})
            assert after.worker_pid == pid == over.worker_pid == echoed.worker_pid
            assert await worker_pids(peer) == {pid}

    asyncio.run(scenario())


def test_a_huge_error_is_cut_to_fit_and_the_worker_goes_on() -> None:
    """An error too large for a message (a 150 kB exception message, twice with its
    traceback) is cut to fit, so the execution fails cleanly and its worker takes the next
    job. (Uncut, the `job_ended` exceeded the progress socket's size limit: libzmq dropped
    it with the connection and the execution stayed `running` forever.)"""

    async def scenario() -> None:
        async with serve_and_connect(workers=1, max_message_size=SMALL_MESSAGES) as (_, peer):
            failing = await peer.submit("fail", message="x" * 150_000)
            record = await peer.wait_final(failing, timeout=5.0)
            assert record.status is S.FAILED
            assert record.error is not None
            assert record.error.code is ErrorCode.HANDLER_ERROR
            after = await peer.wait_final(await peer.submit("echo", ok=True), timeout=5.0)
            assert after.status is S.COMPLETE

    asyncio.run(scenario())


def test_a_result_at_the_limit_with_a_non_ascii_label_is_published() -> None:
    """The room left for a result subtracts the label as the wire writes it (non-ASCII
    escaped: `\\u00e9` is 6 bytes, not 2), so a result at the worker's limit still makes an
    `execution` event that fits and is published."""

    async def scenario() -> None:
        async with serve_and_connect(workers=1, max_message_size=SMALL_MESSAGES) as (_, peer):
            # 2000 non-ASCII characters: 4000 bytes of UTF-8, 12000 on the wire (a long
            # label in a non-Latin script, or with emoji, does the same).
            label = "é" * 2000
            limit = SMALL_MESSAGES - RECORD_ALLOWANCE - len(label.encode())
            size = largest_array_result(limit)
            eid = await peer.submit("array_result", size=size, label=label)
            record = await peer.wait_final(eid, timeout=5.0)
            assert record.status in {S.COMPLETE, S.FAILED}
            assert (await peer.status(eid)).execution == record

    asyncio.run(scenario())
