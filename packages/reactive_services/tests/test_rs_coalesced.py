"""CoalescedRequests (asyncio) and BlockingCoalescedRequests (threads).

At most one active job and at most one follow-up however many requests arrive; the last
request is always served; a failing job is reported and the follow-up still runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reactive_services import BlockingCoalescedRequests, CoalescedRequests

WAIT_S = 5.0
DRAIN_ROUNDS = 50  # loop iterations allowed for the expected state to settle


class JobFailed(Exception):
    pass


class CoalescedMachine(RuleBasedStateMachine):
    """Scripts job completion through futures the machine resolves; owns its event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.runs: list[asyncio.Future[None]] = []
        self.errors: list[Exception] = []
        self.coalesced = CoalescedRequests(self._job, on_error=self.errors.append)
        self.active = False
        self.follow_up = False
        self.closed = False
        self.expected_runs = 0
        self.expected_errors = 0
        self.closing: asyncio.Task[None] | None = None

    async def _job(self) -> None:
        future: asyncio.Future[None] = self.loop.create_future()
        self.runs.append(future)
        await future

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        self.loop.run_until_complete(coro)

    async def _settle(self) -> None:
        """Let the loop run until the coalescer reached the model's state."""
        for _ in range(DRAIN_ROUNDS):
            unfinished = [f for f in self.runs if not f.done()]
            if (
                len(self.runs) == self.expected_runs
                and len(unfinished) == int(self.active)
                and self.coalesced.is_active is self.active
                and self.coalesced.closed is self.closed
            ):
                return
            await asyncio.sleep(0)

    @rule()
    def request(self) -> None:
        async def go() -> bool:
            return self.coalesced.request()

        started = self.loop.run_until_complete(go())
        expected = not self.closed and not self.active
        assert started is expected
        if expected:
            self.active = True
            self.expected_runs += 1
        elif not self.closed:
            self.follow_up = True
        self._run(self._settle())

    @precondition(lambda self: self.active)
    @rule(fails=st.booleans())
    def finish_active(self, fails: bool) -> None:
        current = self.runs[-1]
        if fails:
            current.set_exception(JobFailed("job failed"))
            self.expected_errors += 1
        else:
            current.set_result(None)
        if self.follow_up:
            self.follow_up = False
            self.expected_runs += 1
        else:
            self.active = False
        self._run(self._settle())

    @precondition(lambda self: not self.closed)
    @rule(cancel=st.booleans())
    def close(self, cancel: bool) -> None:
        self.closed = True
        self.follow_up = False
        if self.active and not cancel:  # aclose waits for the active job: run it as a task
            self.closing = self.loop.create_task(self.coalesced.aclose(cancel=False))
            self._run(self._settle())
        else:
            self._run(self.coalesced.aclose(cancel=cancel))
            self.active = False

    @invariant()
    def matches_model(self) -> None:
        assert self.coalesced.is_active is self.active
        assert self.coalesced.follow_up_pending is self.follow_up
        assert self.coalesced.closed is self.closed
        assert len(self.runs) == self.expected_runs
        assert sum(not f.done() for f in self.runs) <= 1  # at most one active job
        assert len(self.errors) == self.expected_errors
        assert all(isinstance(e, JobFailed) for e in self.errors)

    def teardown(self) -> None:
        try:
            self._run(self.coalesced.aclose(cancel=True))
            assert not self.coalesced.is_active
            self._run(self.coalesced.wait_idle())
            if self.closing is not None:
                self._run(asyncio.wait_for(self.closing, WAIT_S))
        finally:
            self.loop.close()


CoalescedMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
TestCoalescedMachine = CoalescedMachine.TestCase


def test_burst_of_requests_runs_active_plus_one_follow_up() -> None:
    calls: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def job() -> None:
            calls.append(len(calls))
            await gate.wait()

        coalesced = CoalescedRequests(job)
        assert coalesced.request()
        await asyncio.sleep(0)
        assert [coalesced.request() for _ in range(50)] == [False] * 50
        assert coalesced.follow_up_pending
        gate.set()
        await asyncio.wait_for(coalesced.wait_idle(), WAIT_S)
        assert not coalesced.is_active
        await coalesced.aclose()
        assert not coalesced.request()

    asyncio.run(main())
    assert calls == [0, 1]


def test_default_error_hook_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def job() -> None:
        raise JobFailed("no refresh today")

    async def main() -> None:
        coalesced = CoalescedRequests(job)
        coalesced.request()
        await asyncio.wait_for(coalesced.wait_idle(), WAIT_S)

    with caplog.at_level(logging.ERROR, logger="reactive_services"):
        asyncio.run(main())
    assert any("coalesced job raised" in r.getMessage() for r in caplog.records)


def test_request_refuses_a_second_event_loop() -> None:
    async def job() -> None:
        return None

    coalesced = CoalescedRequests(job)

    async def ask() -> bool:
        return coalesced.request()

    async def ask_and_settle() -> None:
        coalesced.request()
        await coalesced.wait_idle()

    asyncio.run(ask_and_settle())
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(ask())


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("fine_grained_switching")
def test_blocking_many_threads_one_job_at_a_time_last_request_served() -> None:
    order = itertools.count()
    order_lock = threading.Lock()
    active = [0, 0]
    run_starts: list[int] = []
    request_marks: list[int] = []

    def stamp() -> int:
        with order_lock:
            return next(order)

    def job() -> None:
        with order_lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            run_starts.append(next(order))
        for _ in range(300):  # a window for other threads to pile up requests
            pass
        with order_lock:
            active[0] -= 1

    coalesced = BlockingCoalescedRequests(job)
    go = threading.Barrier(4)

    def requester() -> None:
        go.wait(WAIT_S)
        for _ in range(300):
            mark = stamp()
            with order_lock:
                request_marks.append(mark)
            coalesced.request()

    threads = [threading.Thread(target=requester) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert coalesced.wait_idle(WAIT_S)
    assert active[1] == 1
    assert max(run_starts) > max(request_marks)  # the last request was served
    assert len(run_starts) <= len(request_marks)
    assert not coalesced.is_active
    assert not coalesced.follow_up_pending


def test_blocking_request_from_inside_the_job_becomes_the_follow_up() -> None:
    runs: list[int] = []
    holder: list[BlockingCoalescedRequests] = []

    def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            assert holder[0].request() is False  # no recursion: marks the follow-up
            assert holder[0].request() is False

    coalesced = BlockingCoalescedRequests(job)
    holder.append(coalesced)
    assert coalesced.request() is True
    assert runs == [0, 1]


def test_blocking_failing_job_reported_and_follow_up_still_runs() -> None:
    errors: list[Exception] = []
    runs: list[str] = []
    holder: list[BlockingCoalescedRequests] = []

    def job() -> None:
        runs.append("run")
        if len(runs) == 1:
            holder[0].request()
            raise JobFailed("first run failed")

    coalesced = BlockingCoalescedRequests(job, on_error=errors.append)
    holder.append(coalesced)
    assert coalesced.request()
    assert runs == ["run", "run"]
    assert [str(e) for e in errors] == ["first run failed"]


def test_blocking_close_drops_the_follow_up_and_refuses_requests() -> None:
    runs: list[str] = []
    holder: list[BlockingCoalescedRequests] = []

    def job() -> None:
        runs.append("run")
        holder[0].request()
        holder[0].close()

    coalesced = BlockingCoalescedRequests(job)
    holder.append(coalesced)
    assert coalesced.request()
    assert runs == ["run"]
    assert coalesced.request() is False
    assert coalesced.closed


def test_blocking_interrupt_leaves_it_idle() -> None:
    def job() -> None:
        raise KeyboardInterrupt

    coalesced = BlockingCoalescedRequests(job)
    with pytest.raises(KeyboardInterrupt):
        coalesced.request()
    assert not coalesced.is_active
    assert coalesced.wait_idle(0)
