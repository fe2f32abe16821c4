"""Helpers for testing against a real server: a raw protocol peer, free ports, sample handlers.

`RawPeer` speaks the wire protocol with nothing but pyzmq and `WireCodec` (a DEALER for
requests, a SUB for events), so tests of the server do not depend on the client library, and
tests can send deliberately broken frames. `zmqruntime.testing.handlers` holds handlers that
worker processes can import.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import itertools
import random
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import attrs
import zmq
import zmq.asyncio

from zmqruntime.codec import Envelope, WireCodec, WireError
from zmqruntime.connection import ConnectionInfo
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    Cancel,
    CancelReply,
    ExecutionEvent,
    ExecutionEvents,
    ExecutionRecord,
    Heartbeat,
    Message,
    ProgressBatch,
    ServerStatus,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server.server import ExecutionServer

__all__ = [
    "SAMPLE_HANDLERS",
    "ManualClock",
    "RawPeer",
    "asyncio_test",
    "example_progress",
    "free_port_block",
    "local_dask_client",
    "serve_and_connect",
]

#: The sample handlers of `zmqruntime.testing.handlers`, as a `--handlers` reference.
SAMPLE_HANDLERS = "zmqruntime.testing.handlers:HANDLERS"


def free_port_block(count: int = 3, host: str = "127.0.0.1") -> int:
    """A base port P such that P … P+count-1 were all free on `host` a moment ago."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        sockets: list[socket.socket] = []
        try:
            for offset in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, base + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"found no {count} consecutive free ports on {host}")


class RawPeer:
    """A protocol-level peer of one server: signed requests over DEALER, events over SUB.

    Use `async with RawPeer(info) as peer`; `await peer.ready()` waits for a heartbeat, after
    which the event subscription is live (no event published later is missed). `events`
    holds an `executions` event as the `execution` events it carries.
    """

    def __init__(self, info: ConnectionInfo, *, subscribe: bytes = b"") -> None:
        self.info = info
        self.codec = WireCodec(info.key)
        self.context = zmq.asyncio.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(info.control)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, subscribe)
        self.sub.connect(info.events)
        self.events: list[Envelope] = []
        self.bad_events: list[WireError] = []
        self.other_replies: asyncio.Queue[Envelope] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._new_event = asyncio.Event()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._read_replies()),
            asyncio.create_task(self._read_events()),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dealer.close(linger=0)
        self.sub.close(linger=0)
        self.context.term()

    async def _read_replies(self) -> None:
        while True:
            frames = await self.dealer.recv_multipart(copy=False)
            envelope = self.codec.decode(frames)
            future = self._pending.pop(envelope.request_id or "", None)
            if future is not None and not future.done():
                future.set_result(envelope)
            else:
                self.other_replies.put_nowait(envelope)

    async def _read_events(self) -> None:
        while True:
            frames = await self.sub.recv_multipart(copy=False)
            try:
                envelope = self.codec.decode(frames, topic=True)
            except WireError as exc:
                self.bad_events.append(exc)
            else:
                self.events.extend(_unbatched(envelope))
            self._new_event.set()

    # -- requests -------------------------------------------------------------------------

    async def request_envelope(self, message: Message, *, timeout: float = 10.0) -> Envelope:
        """Send one signed request and return the whole reply envelope."""
        request_id = f"raw-{next(self._ids)}"
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.send_frames(self.codec.encode(message, request_id=request_id))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def request(self, message: Message, *, timeout: float = 10.0) -> Any:
        """Send one signed request and return the reply body (an `ErrorReply` on refusal)."""
        return (await self.request_envelope(message, timeout=timeout)).message

    async def submit(self, handler: str, *, label: str | None = None, **params: Any) -> str:
        """Submit `handler` with `params` and return the new execution's id."""
        reply = await self.request(Submit(handler=handler, params=params, label=label))
        assert isinstance(reply, SubmitReply), reply
        return reply.execution_id

    async def status(self, execution_id: str) -> StatusReply:
        """One execution's status reply."""
        reply = await self.request(StatusRequest(execution_id=execution_id))
        assert isinstance(reply, StatusReply), reply
        return reply

    async def server_status(self) -> ServerStatus:
        """The server's status reply."""
        reply = await self.request(StatusRequest(execution_id=None))
        assert isinstance(reply, ServerStatus), reply
        return reply

    async def cancel(self, execution_id: str, *, force: bool = False) -> CancelReply:
        """Cancel one execution; its cancel reply."""
        reply = await self.request(Cancel(execution_id=execution_id, force=force))
        assert isinstance(reply, CancelReply), reply
        return reply

    async def started_pid(self, execution_id: str) -> int:
        """Wait for the first progress report of a handler that reports its start (the
        sample handlers do); by then the record is `running` with its worker's pid."""
        await self.wait_progress(execution_id)
        record = (await self.status(execution_id)).execution
        assert record.status is ExecutionStatus.RUNNING, record
        assert record.worker_pid is not None
        return record.worker_pid

    async def send_frames(self, frames: Sequence[Any]) -> None:
        """Send arbitrary frames on the control channel (for malformed-input tests)."""
        await self.dealer.send_multipart(list(frames), copy=False)

    # -- events ---------------------------------------------------------------------------

    async def wait_event(
        self, predicate: Callable[[Envelope], bool], *, timeout: float = 10.0
    ) -> Envelope:
        """The first event received so far or from now on that matches `predicate`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = 0
        while True:
            while index < len(self.events):
                envelope = self.events[index]
                index += 1
                if predicate(envelope):
                    return envelope
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout} s")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), remaining)

    async def ready(self, *, timeout: float = 10.0) -> Heartbeat:
        """Wait for a heartbeat: from then on the subscription receives every event."""
        envelope = await self.wait_event(
            lambda e: isinstance(e.message, Heartbeat), timeout=timeout
        )
        assert isinstance(envelope.message, Heartbeat)
        return envelope.message

    async def wait_status(
        self, execution_id: str, *statuses: ExecutionStatus, timeout: float = 20.0
    ) -> ExecutionRecord:
        """The first `execution` event of this execution with one of `statuses`."""

        def matches(envelope: Envelope) -> bool:
            message = envelope.message
            return (
                isinstance(message, ExecutionEvent)
                and message.record.execution_id == execution_id
                and message.record.status in statuses
            )

        envelope = await self.wait_event(matches, timeout=timeout)
        assert isinstance(envelope.message, ExecutionEvent)
        return envelope.message.record

    async def wait_final(self, execution_id: str, *, timeout: float = 20.0) -> ExecutionRecord:
        """The execution's end: its first `execution` event with a terminal status."""
        return await self.wait_status(
            execution_id, *(s for s in ExecutionStatus if s.is_terminal), timeout=timeout
        )

    async def wait_progress(self, execution_id: str, *, timeout: float = 20.0) -> ProgressUpdate:
        """The first progress event of this execution."""

        def matches(envelope: Envelope) -> bool:
            message = envelope.message
            return isinstance(message, ProgressUpdate) and message.execution_id == execution_id

        envelope = await self.wait_event(matches, timeout=timeout)
        assert isinstance(envelope.message, ProgressUpdate)
        return envelope.message

    def events_of(self, execution_id: str) -> list[ExecutionEvent | ProgressUpdate]:
        """Every `execution` and `progress` event received for this execution, in order."""
        found: list[ExecutionEvent | ProgressUpdate] = []
        for envelope in self.events:
            message = envelope.message
            if isinstance(message, ExecutionEvent):
                if message.record.execution_id == execution_id:
                    found.append(message)
            elif isinstance(message, ProgressUpdate) and message.execution_id == execution_id:
                found.append(message)
        return found


@contextlib.asynccontextmanager
async def serve_and_connect(
    handlers: str = SAMPLE_HANDLERS, **options: Any
) -> AsyncIterator[tuple[ExecutionServer, RawPeer]]:
    """An in-process server on this loop (2 workers, 0.1 s heartbeats unless given) and a
    `RawPeer` whose subscription is live; the server is force-shut down on exit."""
    options.setdefault("workers", 2)
    options.setdefault("heartbeat_interval", 0.1)
    server = ExecutionServer(handlers, **options)
    info = await server.start()
    try:
        async with RawPeer(info) as peer:
            await peer.ready()
            yield server, peer
    finally:
        await server.shutdown(force=True)


@contextlib.contextmanager
def local_dask_client(n_workers: int = 2) -> Iterator[Any]:
    """A `distributed.Client` of a LocalCluster of single-threaded worker processes on
    loopback, where a task whose worker dies is not retried (`allowed-failures` 0), so a
    killed worker shows at once. Needs the `dask` extra."""
    # Imported by name: typed as Any, so type checking works without the extra installed.
    dask: Any = importlib.import_module("dask")
    distributed: Any = importlib.import_module("distributed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def example_progress(**changes: Any) -> dict[str, Any]:
    """The `ProgressUpdate` example of docs/protocol.md §6 as it travels on the wire (a fresh
    dict each call), with `changes` applied."""
    example: dict[str, Any] = {
        "type": "progress",
        "execution_id": "e1",
        "plate_id": "/data/plate_01",
        "axis_id": "B06",
        "step_name": "SegmentNuclei",
        "step_index": 2,
        "total_steps": 7,
        "phase": "pattern_group",
        "status": "running",
        "completed": 14,
        "total": 50,
        "percent": 28.0,
        "timestamp": 1700000000.0,
        "seq": 1,
    }
    return {**example, **changes}


class ManualClock:
    """A monotonic clock for tests that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def asyncio_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function on a fresh event loop of its own, bounded by 10 s."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(10):
                await fn(*args, **kwargs)

        asyncio.run(bounded())

    return run


def _unbatched(envelope: Envelope) -> list[Envelope]:
    """An `executions` or `progress_batch` event as the `execution` or `progress` events it
    carries (each under its execution's topic, as if published alone); any other event as it
    is."""
    batch = envelope.message
    if isinstance(batch, ExecutionEvents):
        return [
            attrs.evolve(
                envelope,
                type=ExecutionEvent.TYPE,
                message=event,
                topic=event.record.execution_id.encode(),
            )
            for event in batch.events
        ]
    if isinstance(batch, ProgressBatch):
        return [
            attrs.evolve(envelope, type=ProgressUpdate.TYPE, message=update)
            for update in batch.updates
        ]
    return [envelope]
