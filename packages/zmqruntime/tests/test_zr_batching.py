"""Batching on the wire: `submit_batch` (docs/protocol.md §5) and the client sending one
loop turn's submits as one; `executions` and `progress_batch` events (§6) and the client
reading them; `wait` taking its first look from the events.

Real in-process servers with their own worker processes, a real `ExecutionClient` and raw
requests over loopback. What the server was asked is read by wrapping its request handler
(a spy: the real handler still answers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zmqruntime.client import ExecutionClient, Resynced, ServerError
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ErrorCode,
    ErrorReply,
    ExecutionEvent,
    Heartbeat,
    Message,
    ProgressBatch,
    StatusRequest,
    Submit,
    SubmitBatch,
    SubmitBatchReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.server.server import ExecutionServer
from zmqruntime.server.update_batch import UpdateBatches, estimated_size
from zmqruntime.submit_batching import MAX_BATCH_BYTES
from zmqruntime.testing import RawPeer, example_progress, serve_and_connect

S = ExecutionStatus
#: Long enough that a wait which only ends by polling would hit the test's timeout.
NEVER = 120.0

pytestmark = pytest.mark.timeout(60)


def spy_on_requests(server: ExecutionServer) -> list[Message]:
    """Record every request the server answers, in order."""
    asked: list[Message] = []
    answer = server._answer

    def recording(message: Message) -> Message:
        asked.append(message)
        return answer(message)

    server._answer = recording  # type: ignore[method-assign]
    return asked


@asynccontextmanager
async def client_of(server: ExecutionServer) -> AsyncIterator[ExecutionClient]:
    async with ExecutionClient(server.connection_info, subscribe_events=False) as client:
        yield client


async def completed(peer: RawPeer, execution_id: str) -> Any:
    record = await peer.wait_final(execution_id)
    assert record.status is S.COMPLETE, record
    return record.result


def test_a_batch_is_answered_item_by_item_as_lone_submits_would_be() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (server, peer):
            reply = await peer.request(
                SubmitBatch(
                    submits=(
                        Submit(handler="echo", params={"i": 0}),
                        Submit(handler="no_such_handler", params={}),
                        Submit(handler="echo", params={"i": 2}, label="two"),
                        Submit(handler="echo", params={}, compile_artifact_id="f" * 32),
                    )
                )
            )
            assert isinstance(reply, SubmitBatchReply)
            first, unknown, third, missing = reply.outcomes
            assert first.reply is not None
            assert third.reply is not None
            assert first.reply.execution_id != third.reply.execution_id
            assert first.reply.status is S.QUEUED
            assert isinstance(unknown.error, ErrorReply)
            assert unknown.error.code is ErrorCode.UNKNOWN_HANDLER
            assert unknown.error.details == {"field": "submit.handler"}
            assert isinstance(missing.error, ErrorReply)
            assert missing.error.code is ErrorCode.ARTIFACT_MISSING
            assert await completed(peer, first.reply.execution_id) == {"i": 0}
            assert await completed(peer, third.reply.execution_id) == {"i": 2}
            assert (await peer.status(third.reply.execution_id)).execution.label == "two"
            assert server.counters.submitted == 2

    asyncio.run(scenario())


def test_a_full_queue_accepts_the_first_submissions_of_a_batch_and_refuses_the_rest() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1, max_records=3) as (_, peer):
            blocker = await peer.submit("wait_for_cancel", timeout=30)
            await peer.started_pid(blocker)  # running: not in the queue
            reply = await peer.request(
                SubmitBatch(
                    submits=tuple(Submit(handler="echo", params={"i": i}) for i in range(4))
                )
            )
            assert isinstance(reply, SubmitBatchReply)
            codes = [o.error.code if o.error else None for o in reply.outcomes]
            assert codes == [None, None, ErrorCode.BUSY, ErrorCode.BUSY]
            positions = [o.reply.queue_position for o in reply.outcomes if o.reply]
            assert positions == [1, 2]
            await peer.cancel(blocker)
            for outcome in reply.outcomes[:2]:
                assert outcome.reply is not None
                await completed(peer, outcome.reply.execution_id)

    asyncio.run(scenario())


def test_submits_of_one_loop_turn_travel_as_one_request_in_call_order() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (server, peer), client_of(server) as client:
            asked = spy_on_requests(server)
            calls = [client.submit("echo", {"i": i}) for i in range(5)]
            calls.insert(2, client.submit("no_such_handler"))
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert [type(m) for m in asked] == [SubmitBatch]
            batch = asked[0]
            assert isinstance(batch, SubmitBatch)
            assert [s.handler for s in batch.submits] == ["echo"] * 2 + ["no_such_handler"] + [
                "echo"
            ] * 3
            refused = outcomes.pop(2)
            assert isinstance(refused, ServerError)
            assert refused.code == "unknown_handler"
            for i, reply in enumerate(outcomes):
                assert not isinstance(reply, BaseException), reply
                assert await completed(peer, reply.execution_id) == {"i": i}
            # Queued in call order, behind nothing (the workers were idle).
            positions = [r.queue_position for r in outcomes if not isinstance(r, BaseException)]
            assert positions == [1, 2, 3, 4, 5]

            lone = await client.submit("echo", {"alone": True})
            assert type(asked[-1]) is Submit
            assert await completed(peer, lone.execution_id) == {"alone": True}

    asyncio.run(scenario())


def test_arrays_of_several_submits_in_one_batch_reach_their_own_executions() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (server, peer), client_of(server) as client:
            asked = spy_on_requests(server)
            images = [np.arange(n, dtype=np.uint16).reshape(1, n) for n in (3, 70_000, 5)]
            replies = await asyncio.gather(
                *(client.submit("echo", {"image": image, "n": i}) for i, image in enumerate(images))
            )
            assert [type(m) for m in asked] == [SubmitBatch]
            for i, (reply, image) in enumerate(zip(replies, images, strict=True)):
                result = await completed(peer, reply.execution_id)
                assert result["n"] == i
                np.testing.assert_array_equal(result["image"], image)

    asyncio.run(scenario())


def test_a_batch_too_large_for_one_request_is_split_and_every_submit_answered() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (server, peer), client_of(server) as client:
            asked = spy_on_requests(server)
            text = "x" * (MAX_BATCH_BYTES // 3)
            replies = await asyncio.gather(
                *(client.submit("echo", {"t": text, "i": i}) for i in range(7))
            )
            assert len(asked) > 1
            submits = [s for m in asked for s in (m.submits if isinstance(m, SubmitBatch) else [m])]
            assert [s.params["i"] for s in submits] == list(range(7))  # in call order
            for i, reply in enumerate(replies):
                assert (await completed(peer, reply.execution_id))["i"] == i

    asyncio.run(scenario())


def test_submits_with_different_timeouts_travel_apart_and_a_cancelled_one_is_not_sent() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (server, peer), client_of(server) as client:
            asked = spy_on_requests(server)
            gone = asyncio.ensure_future(client.submit("echo", {"gone": True}))
            short = client.submit("echo", {"short": True}, timeout=5)
            long = client.submit("echo", {"long": True}, timeout=50)
            await asyncio.sleep(0)  # `gone` starts waiting for the loop turn to end...
            gone.cancel()  # ...and is cancelled before it is sent
            replies = await asyncio.gather(short, long)
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert sorted(type(m).__name__ for m in asked) == ["Submit", "Submit"]
            assert server.counters.submitted == 2
            for reply in replies:
                await completed(peer, reply.execution_id)

    asyncio.run(scenario())


# -- `executions` events ----------------------------------------------------------------------


def queued_events(peer: RawPeer, execution_ids: list[str]) -> list[Any]:
    """The `queued` event envelopes of these executions, in the order received."""
    wanted = set(execution_ids)
    return [
        e
        for e in peer.events
        if isinstance(e.message, ExecutionEvent)
        and e.message.record.execution_id in wanted
        and e.message.record.status is S.QUEUED
    ]


def test_the_queued_records_of_a_batch_are_published_as_one_executions_event() -> None:
    async def scenario() -> None:
        async with serve_and_connect() as (_, peer):
            reply = await peer.request(
                SubmitBatch(
                    submits=tuple(Submit(handler="echo", params={"i": i}) for i in range(20))
                )
            )
            assert isinstance(reply, SubmitBatchReply)
            ids = [o.reply.execution_id for o in reply.outcomes if o.reply is not None]
            for eid in ids:
                await completed(peer, eid)
            queued = queued_events(peer, ids)
            # RawPeer records an `executions` event as the events it carries: one msg_id.
            assert len({e.msg_id for e in queued}) == 1
            assert [e.message.record.execution_id for e in queued] == ids
            assert all(e.message.seq == 1 for e in queued)
            assert all(e.topic == e.message.record.execution_id.encode() for e in queued)

    asyncio.run(scenario())


def test_executions_events_stay_within_the_message_size_limit() -> None:
    """Long labels: the queued records of one batch need several `executions` events on a
    server with small messages; every record is published, none is dropped."""

    async def scenario() -> None:
        limit = 256 * 1024
        async with serve_and_connect(max_message_size=limit) as (server, peer):
            label = "é" * 1000  # 6,000 bytes escaped: 30 fit in a request, not in one event
            reply = await peer.request(
                SubmitBatch(
                    submits=tuple(
                        Submit(handler="echo", params={"i": i}, label=label) for i in range(30)
                    )
                )
            )
            assert isinstance(reply, SubmitBatchReply)
            ids = [o.reply.execution_id for o in reply.outcomes if o.reply is not None]
            assert len(ids) == 30
            for eid in ids:
                assert (await completed(peer, eid)) == {"i": ids.index(eid)}
            queued = queued_events(peer, ids)
            assert [e.message.record.execution_id for e in queued] == ids
            assert 1 < len({e.msg_id for e in queued}) < 30
            assert server.counters.internal_errors == 0

    asyncio.run(scenario())


class Follower:
    """Reads a client's `events()` in a task: what it yielded, and when it went live."""

    def __init__(self, client: ExecutionClient) -> None:
        self.seen: list[Any] = []
        self.live = asyncio.Event()
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._follow(client))

    async def _follow(self, client: ExecutionClient) -> None:
        async for event in client.events():
            if isinstance(event, Heartbeat):
                self.live.set()  # the subscription is live: no later event is missed
            else:
                self.seen.append(event)
                self.changed.set()

    def records(self, execution_id: str) -> list[Any]:
        return [
            e.record
            for e in self.seen
            if isinstance(e, ExecutionEvent) and e.record.execution_id == execution_id
        ]

    async def until_ended(self, execution_ids: set[str]) -> None:
        async with asyncio.timeout(20):
            while not all(
                any(r.status.is_terminal for r in self.records(eid)) for eid in execution_ids
            ):
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@asynccontextmanager
async def followed_client() -> AsyncIterator[tuple[ExecutionServer, ExecutionClient, Follower]]:
    """A server, a client of it, and a live `Follower` of the client's events."""
    async with (
        serve_and_connect() as (server, _),
        ExecutionClient(server.connection_info) as client,
    ):
        follower = Follower(client)
        try:
            await follower.live.wait()
            yield server, client, follower
        finally:
            await follower.stop()


def test_the_client_yields_the_events_an_executions_event_carries_without_resyncing() -> None:
    async def scenario() -> None:
        async with followed_client() as (server, client, follower):
            asked = spy_on_requests(server)
            replies = await asyncio.gather(*(client.submit("echo", {"i": i}) for i in range(12)))
            ids = {r.execution_id for r in replies}
            await follower.until_ended(ids)
            for eid in ids:
                statuses = [r.status for r in follower.records(eid)]
                assert statuses[0] is S.QUEUED
                assert statuses[-1] is S.COMPLETE
            assert not any(isinstance(e, Resynced) for e in follower.seen)
            assert not any(isinstance(m, StatusRequest) for m in asked)

    asyncio.run(scenario())


def test_wait_takes_its_first_look_from_the_events_and_asks_when_it_has_none() -> None:
    async def scenario() -> None:
        async with followed_client() as (server, client, follower):
            first = await client.submit("echo", {"first": True})
            await follower.until_ended({first.execution_id})  # the client holds its end
            asked = spy_on_requests(server)
            outcome = await client.wait(first.execution_id, poll_interval=NEVER)
            assert outcome.payload["result"] == {"first": True}
            assert asked == []  # the end event said it all

            client._forget_record(first.execution_id)  # as if evicted
            again = await client.wait(first.execution_id, poll_interval=NEVER)
            assert again.payload["result"] == {"first": True}
            assert [type(m) for m in asked] == [StatusRequest]

    asyncio.run(scenario())


# -- `progress_batch` events -------------------------------------------------------------------


def progress_of(peer: RawPeer, execution_id: str) -> list[Any]:
    """The `progress` envelopes of this execution, in the order received (RawPeer records a
    `progress_batch` event as the updates it carries, under one msg_id)."""
    return [
        e
        for e in peer.events
        if isinstance(e.message, ProgressUpdate) and e.message.execution_id == execution_id
    ]


async def flood_while_the_loop_is_held(peer: RawPeer, tmp: Path, n: int, **params: Any) -> str:
    """Submit a job that reports `n` updates once told to, and hold the event loop (the
    in-process server with it) from the moment it is told until it has sent them all: the
    server then finds every report waiting together."""
    go, done = tmp / "go", tmp / "done"
    execution_id = await peer.submit(
        "report", n=n, axes=["A01", "A02", "B01"], go_file=str(go), done_file=str(done), **params
    )
    await peer.wait_status(execution_id, S.RUNNING, timeout=20)  # waiting for `go`
    go.touch()
    deadline = time.monotonic() + 20
    while not done.exists():  # holds the loop on purpose: no report is read meanwhile
        assert time.monotonic() < deadline, "the handler did not finish reporting"
        time.sleep(0.001)  # noqa: ASYNC251 - the loop must not run here
    return execution_id


def test_updates_handled_together_are_published_as_progress_batches_in_seq_order(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            async with ExecutionClient(server.connection_info) as client:
                follower = Follower(client)
                await follower.live.wait()
                execution_id = await flood_while_the_loop_is_held(peer, tmp_path, 300)
                await completed(peer, execution_id)
                await follower.until_ended({execution_id})
                await follower.stop()
            updates = progress_of(peer, execution_id)
            assert [e.message.seq for e in updates] == list(range(3, 303))  # 1, 2: queued, running
            assert [e.message.completed for e in updates] == list(range(1, 301))
            assert all(e.topic == execution_id.encode() for e in updates)
            batches = {e.msg_id for e in updates}
            assert len(batches) < 300 // 4, "the waiting reports were not batched"
            ended = [
                e
                for e in peer.events
                if isinstance(e.message, ExecutionEvent) and e.message.record.status.is_terminal
            ]
            assert ended[0].message.seq == 303
            assert peer.events.index(ended[0]) > peer.events.index(updates[-1])
            # The client yields each update alone, in order, with nothing to resync.
            seen = [
                e.seq
                for e in follower.seen
                if isinstance(e, ProgressUpdate) and e.execution_id == execution_id
            ]
            assert seen == list(range(3, 303))
            assert not any(isinstance(e, Resynced) for e in follower.seen)
            assert server.counters.internal_errors == 0

    asyncio.run(scenario())


def test_progress_batches_stay_within_their_size_budget(tmp_path: Path) -> None:
    """Long messages: waiting updates need several batches on a server with small messages;
    every update is published, in order, none dropped."""

    async def scenario() -> None:
        limit = 64 * 1024  # a budget of half: 32 KiB, about five of these updates
        async with serve_and_connect(workers=1, max_message_size=limit) as (server, peer):
            message = "é" * 1000  # 6,000 bytes escaped
            execution_id = await flood_while_the_loop_is_held(peer, tmp_path, 40, message=message)
            await completed(peer, execution_id)
            updates = progress_of(peer, execution_id)
            assert [e.message.completed for e in updates] == list(range(1, 41))
            assert all(e.message.message == message for e in updates)
            sizes = collections.Counter(e.msg_id for e in updates)
            assert max(sizes.values()) <= 5
            assert len(sizes) < 40
            assert server.counters.internal_errors == 0

    asyncio.run(scenario())


def test_the_batch_budget_cuts_before_an_update_that_would_not_fit() -> None:
    def update(seq: int, message: str | None = None) -> ProgressUpdate:
        wire = example_progress(execution_id="e" * 32, seq=seq, message=message)
        return ProgressUpdate.from_wire(wire)

    small = estimated_size(update(1))
    batches = UpdateBatches(budget=3 * small)
    assert batches.add(update(1)) is None
    assert batches.add(update(2)) is None
    assert batches.add(update(3)) is None
    full = batches.add(update(4))  # would make four: the three go, the fourth waits
    assert full is not None
    assert [u.seq for u in full] == [1, 2, 3]
    big = update(5, "x" * (3 * small))  # larger than the budget: alone
    assert [u.seq for u in batches.add(big) or []] == [4]
    assert [u.seq for u in batches.add(update(6)) or []] == [5]
    assert [[u.seq for u in b] for b in batches.take()] == [[6]]
    assert not batches


@pytest.mark.parametrize(
    ("second", "path"),
    [
        ({"execution_id": "f" * 32, "seq": 2}, "progress_batch.updates[1].execution_id"),
        ({"seq": 1}, "progress_batch.updates[1].seq"),
    ],
)
def test_a_progress_batch_holds_one_execution_in_rising_seq_order(
    second: dict[str, Any], path: str
) -> None:
    first = example_progress(execution_id="e" * 32, seq=1)
    body = {"updates": [first, {**first, **second}]}
    with pytest.raises(SchemaError) as caught:
        ProgressBatch.from_wire(body)
    assert caught.value.path == path
    assert ProgressBatch.from_wire({"updates": [first, {**first, "seq": 2}]}).updates[1].seq == 2
