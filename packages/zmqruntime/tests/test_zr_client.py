"""ExecutionClient and BlockingExecutionClient against a real server process over loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zmqruntime.blocking_client import BlockingExecutionClient
from zmqruntime.client import ExecutionClient, Resynced, ServerError, ServerUnavailable
from zmqruntime.engines import ExecutionWatch, PollOutcomeKind
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ExecutionEvent, Heartbeat
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS

#: Long enough that a test which only passes by waiting it out would hit pytest's timeout.
NEVER = 60.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server_process(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.2) as process:
        yield process


def run(coro_factory):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_factory())


def test_requests_round_trip(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            pong = await client.ping()
            assert pong.pid == server.pid
            reply = await client.submit("echo", {"x": [1, 2.5, "three"]}, label="plate-1")
            outcome = await client.wait(reply.execution_id, poll_interval=NEVER)
            assert outcome.kind is PollOutcomeKind.COMPLETE
            snapshot = await client.status(reply.execution_id)
            assert snapshot.execution.status is ExecutionStatus.COMPLETE
            assert snapshot.execution.result == {"x": [1, 2.5, "three"]}
            assert snapshot.execution.label == "plate-1"
            overview = await client.status()
            assert "echo" in overview.handlers
            assert overview.server_epoch == server.info.server_epoch
            assert client.server_epoch == server.info.server_epoch

    run(scenario)


def test_numpy_result_comes_back_intact(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            reply = await client.submit("array_result", {"size": 100_000})
            await client.wait(reply.execution_id, poll_interval=NEVER)
            record = (await client.status(reply.execution_id)).execution
            assert isinstance(record.result, dict)
            image = record.result["image"]
            assert isinstance(image, np.ndarray)
            np.testing.assert_array_equal(image, np.arange(100_000, dtype=np.float64))

    run(scenario)


def test_refusals_are_typed_server_errors(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            with pytest.raises(ServerError) as unknown:
                await client.submit("no_such_handler", {})
            assert unknown.value.code == "unknown_handler"
            with pytest.raises(ServerError) as missing:
                await client.status("0" * 32)
            assert missing.value.code == "not_found"
            with pytest.raises(ServerError) as artifact:
                await client.submit("execute", {}, compile_artifact_id="f" * 32)
            assert artifact.value.code == "artifact_missing"

    run(scenario)


def test_failed_handler_outcome_carries_the_error(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            reply = await client.submit("fail", {"message": "bad plate"})
            outcome = await client.wait(reply.execution_id, poll_interval=NEVER)
            assert outcome.kind is PollOutcomeKind.FAILED
            record = (await client.status(reply.execution_id)).execution
            assert record.error is not None
            assert "bad plate" in record.error.message

    run(scenario)


def test_events_arrive_in_sequence_for_one_execution(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            stream = client.events()
            # The subscription is live once a heartbeat got through it.
            async for event in stream:
                if isinstance(event, Heartbeat):
                    break
            reply = await client.submit("report", {"n": 50, "axes": ["A01", "B02"]})
            seqs: list[int] = []
            progress = 0
            async for event in stream:
                if isinstance(event, ProgressUpdate) and event.execution_id == reply.execution_id:
                    progress += 1
                    seqs.append(event.seq)
                elif isinstance(event, ExecutionEvent):
                    if event.record.execution_id != reply.execution_id:
                        continue
                    seqs.append(event.seq)
                    if event.record.status.is_terminal:
                        break
                assert not isinstance(event, Resynced), "no gap expected with a keen reader"
            await stream.aclose()
            assert progress == 50
            assert seqs == list(range(1, len(seqs) + 1))

    run(scenario)


def test_a_reader_that_falls_behind_gets_a_resync_snapshot(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info, event_buffer=4) as client:
            reply = await client.submit("report", {"n": 200})
            stream = client.events(reply.execution_id)
            # Let the whole execution happen while nobody reads the 4-slot buffer.
            outcome = await client.wait(reply.execution_id, poll_interval=NEVER)
            assert outcome.kind is PollOutcomeKind.COMPLETE
            final_seq = (await client.status(reply.execution_id)).seq
            async for event in stream:
                if isinstance(event, Resynced) and event.snapshot.seq == final_seq:
                    assert event.snapshot.execution.status is ExecutionStatus.COMPLETE
                    break
            await stream.aclose()

    run(scenario)


class HeldSnapshots(ExecutionClient):
    """A client whose status replies can be held back once received: a resync kept in flight
    for as long as a test needs (the server and the snapshot it took are real)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released = asyncio.Event()
        self.released.set()
        self.holding = asyncio.Event()

    async def status(self, execution_id: str | None = None, **kwargs: Any) -> Any:
        reply = await super().status(execution_id, **kwargs)
        if not self.released.is_set():
            self.holding.set()
            await self.released.wait()
        return reply


async def pushed(watch: ExecutionWatch, done: Callable[[ExecutionStatus], bool]) -> None:
    """Until an `execution` event this client read shows a status that `done` accepts."""
    while (seen := watch.take_pushed()) is None or not done(seen.status):
        await watch.wait(NEVER)


async def published(client: ExecutionClient, execution_id: str, *, reports: int) -> None:
    """Until the server's snapshot shows that many reports: it has published them by then (no
    event tells the client so: they may still be on their way to it)."""
    async with asyncio.timeout(10):
        while True:
            latest = (await client.status(execution_id)).latest_progress
            if latest is not None and latest.completed >= reports:
                return
            await asyncio.sleep(0.01)


def test_a_gap_found_while_a_resync_is_in_flight_gets_a_resync_of_its_own(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A snapshot asked for before an execution ended cannot stand in for its end: the events
    a reader missed while that snapshot was on its way are resynced again after it."""
    go, resume, marker_go = (tmp_path / name for name in ("go", "resume", "marker"))

    async def scenario() -> None:
        async with HeldSnapshots(server.info, event_buffer=1) as client:
            params = {"n": 4, "go_file": str(go), "pause_at": 2, "resume_file": str(resume)}
            execution_id = (await client.submit("report", params)).execution_id
            stream = client.events(execution_id)
            await anext(stream)  # subscribed; the reports have not started
            go.touch()
            await published(client, execution_id, reports=2)
            # A later execution's end, read by this client, shows it has read both reports: one
            # fills the 1-slot buffer, the other overflowed it.
            marker = await client.submit("report", {"n": 0, "go_file": str(marker_go)})
            with client.signals.watch(marker.execution_id) as watch:
                marker_go.touch()
                await pushed(watch, lambda status: status.is_terminal)
            client.released.clear()
            await anext(stream)  # the overflow is noticed: a resync starts, and is held
            await asyncio.wait_for(client.holding.wait(), 10)  # with the reports paused at 2
            with client.signals.watch(execution_id) as watch:
                resume.touch()
                await pushed(watch, lambda status: status is ExecutionStatus.COMPLETE)
            # Two more reports and the end arrived: one report is buffered, the rest overflowed.
            await anext(stream)  # noticed while the held resync is still on its way
            client.released.set()
            try:
                async with asyncio.timeout(10):
                    async for event in stream:
                        if (
                            isinstance(event, Resynced)
                            and event.snapshot.execution.status.is_terminal
                        ):
                            assert event.snapshot.execution.result == {"reported": 4}
                            break
                        assert not isinstance(event, ExecutionEvent), "the end was never buffered"
            except TimeoutError:
                raise AssertionError("the reader never learnt that the execution ended") from None
            await stream.aclose()

    run(scenario)


def test_blocking_client_works_inside_a_running_loop(server: ServerProcess) -> None:
    async def notebook_cell() -> None:
        # A Jupyter cell: a loop is running, and the user calls blocking code.
        with BlockingExecutionClient(server.info) as client:
            reply = client.submit("sleep", {"seconds": 0.05})
            outcome = client.wait(reply.execution_id, poll_interval=NEVER)
            assert outcome.kind is PollOutcomeKind.COMPLETE
            assert client.status(reply.execution_id).execution.result == {"slept": 0.05}

    asyncio.run(notebook_cell())


def test_blocking_client_without_a_loop_and_its_event_iterator(server: ServerProcess) -> None:
    with BlockingExecutionClient.connect(server.info) as client:
        reply = client.submit("report", {"n": 5})
        covered: set[int] = set()  # the seqs this iterator saw, or saw summed up by a snapshot
        last = 0  # the seq of the execution's end, once seen
        # Joining late, the snapshot may come after the terminal event, or stand in for it
        # (the execution ended before the iterator subscribed): read until covered.
        for event in client.events(reply.execution_id):
            if isinstance(event, Resynced):
                covered |= set(range(1, event.snapshot.seq + 1))
                if event.snapshot.execution.status.is_terminal:
                    last = event.snapshot.seq
            elif isinstance(event, ProgressUpdate | ExecutionEvent):
                covered.add(event.seq)
            if isinstance(event, ExecutionEvent) and event.record.status.is_terminal:
                last = event.seq
            if last and covered >= set(range(1, last + 1)):
                break
        final = client.status(reply.execution_id)
        assert final.execution.status is ExecutionStatus.COMPLETE
        assert covered == set(range(1, final.seq + 1))
        assert client.cancel(reply.execution_id).changed is False


def test_cancel_through_the_client_affects_only_that_execution(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(server.info) as client:
            keep = await client.submit("sleep", {"seconds": 0.5})
            stop = await client.submit("wait_for_cancel", {})
            reply = await client.cancel(stop.execution_id)
            assert reply.changed
            stopped = await client.wait(stop.execution_id, poll_interval=NEVER)
            kept = await client.wait(keep.execution_id, poll_interval=NEVER)
            assert stopped.kind is PollOutcomeKind.CANCELLED
            assert kept.kind is PollOutcomeKind.COMPLETE

    run(scenario)


def test_dead_server_fails_requests_fast() -> None:
    async def scenario(process: ServerProcess) -> None:
        # request_timeout is long: only the connection monitor can make these fail in time.
        async with ExecutionClient(process.info, request_timeout=NEVER) as client:
            await client.ping()
            pending_ping = asyncio.create_task(client.ping())
            os.kill(process.pid, signal.SIGKILL)
            with pytest.raises(ServerUnavailable) as lost:
                await pending_ping
            assert "lost" in str(lost.value) or "no server reachable" in str(lost.value)
            # Nothing answers any more (the freed port may even be taken by another process,
            # whose replies would not verify): a bounded failure, never a hang.
            with pytest.raises(ServerUnavailable):
                await client.ping(timeout=5.0)

    with start_server_process(SAMPLE_HANDLERS, workers=1) as process:
        run(lambda: scenario(process))
        process.wait(10)


def test_a_failed_resync_is_retried_once_the_server_answers_again() -> None:
    class Failed(logging.Handler):
        """Sets an event when the client reports a resync it will retry."""

        def __init__(self, event: asyncio.Event) -> None:
            super().__init__(logging.WARNING)
            self.event = event

        def emit(self, record: logging.LogRecord) -> None:
            if "retried on the next heartbeat" in record.getMessage():
                self.event.set()

    async def scenario(process: ServerProcess) -> None:
        async with ExecutionClient(process.info, request_timeout=0.5) as client:
            reply = await client.submit("echo", {"x": 1})
            assert (await client.wait(reply.execution_id, poll_interval=NEVER)).ok
            everything = client.events()
            await anext(everything)  # a heartbeat arrived: the event stream is live
            failed = asyncio.Event()
            handler = Failed(failed)
            logging.getLogger("zmqruntime.client").addHandler(handler)
            os.kill(process.pid, signal.SIGSTOP)  # the server stalls
            try:
                stream = client.events(reply.execution_id)
                opening = asyncio.create_task(anext(stream))  # its snapshot request times out
                await asyncio.wait_for(failed.wait(), 10)
            finally:
                os.kill(process.pid, signal.SIGCONT)
                logging.getLogger("zmqruntime.client").removeHandler(handler)
            event = await asyncio.wait_for(opening, 10)  # retried after the next heartbeat
            assert isinstance(event, Resynced)
            assert event.snapshot.execution.status is ExecutionStatus.COMPLETE
            await stream.aclose()
            await everything.aclose()

    with start_server_process(SAMPLE_HANDLERS, workers=1, heartbeat_interval=0.2) as process:
        run(lambda: scenario(process))
