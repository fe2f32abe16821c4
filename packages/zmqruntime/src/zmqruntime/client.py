"""The asynchronous execution client: control requests over DEALER, events over SUB.

One `ExecutionClient` lives on one asyncio loop. Its sockets are read by that loop's reader
callbacks (`LoopSocket`; no threads, no task per message): replies are handed to the request
awaiting their `request_id`; events feed the `ExecutionSignals` that pollers wake on, and `seq`
gaps are repaired from a status snapshot. A monitor on the control socket fails every pending
request at once when the connection to the server drops, so a dead server is an immediate
`ServerUnavailable`, never a hang. See docs/protocol.md for the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine, Mapping
from typing import Any, TypeVar, overload

import attrs
import zmq
from zmq.utils.monitor import parse_monitor_message

from zmqruntime.client_errors import ClientClosed, ServerError, ServerUnavailable
from zmqruntime.codec import Envelope, WireCodec, WireError
from zmqruntime.connection import ConnectionInfo
from zmqruntime.curve import CurveKeyPair, apply_curve_client
from zmqruntime.engines import (
    CallbackExecutionStatusPollPolicy,
    ExecutionSignals,
    ExecutionStatusPoller,
    PollOutcome,
    StatusObservation,
    terminal_outcome,
)
from zmqruntime.loop_socket import LoopSocket
from zmqruntime.messages import (
    Cancel,
    CancelReply,
    ErrorReply,
    ExecutionEvent,
    ExecutionEvents,
    ExecutionRecord,
    Heartbeat,
    Message,
    Ping,
    Pong,
    ProgressBatch,
    ServerStatus,
    Shutdown,
    ShutdownReply,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.signing import frame_length
from zmqruntime.submit_batching import SubmitBatcher

__all__ = [
    "ClientClosed",
    "ClientEvent",
    "ExecutionClient",
    "Resynced",
    "ServerError",
    "ServerUnavailable",
]

log = logging.getLogger(__name__)

_Reply = TypeVar("_Reply")

#: The event reader yields to the loop after this many events in a row.
_FAIRNESS_BATCH = 64
#: Events queued in the client's SUB socket before the server's queue takes over.
_EVENTS_RCVHWM = 10_000
#: How many executions the gap detector remembers; the oldest are forgotten first.
_TRACKED_EXECUTIONS = 4096
#: Most bytes (of the events that brought them) of the records the client keeps so `wait`
#: need not ask for what the events already said.
_RECORD_BYTES = 16 * 2**20


@attrs.frozen(kw_only=True)
class Resynced:
    """Yielded by `events()` after a `seq` gap: the status snapshot that replaces what was lost."""

    execution_id: str
    snapshot: StatusReply


ClientEvent = ProgressUpdate | ExecutionEvent | Heartbeat | Resynced
"""What `ExecutionClient.events()` yields."""


class _Subscription:
    """One `events()` iterator's bounded inbox; overflow is a gap the iterator resyncs."""

    def __init__(self, execution_id: str | None, capacity: int) -> None:
        self.execution_id = execution_id
        self.queue: asyncio.Queue[ClientEvent] = asyncio.Queue(maxsize=capacity)
        self.overflowed: set[str] = set()

    def wants(self, execution_id: str | None) -> bool:
        return self.execution_id is None or self.execution_id == execution_id

    def offer(self, event: ClientEvent, execution_id: str | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if execution_id is not None:
                self.overflowed.add(execution_id)


def _client_curve(
    info: ConnectionInfo, keypair: CurveKeyPair | tuple[bytes, bytes] | None
) -> CurveKeyPair | None:
    """The key pair to connect with: the given one when the server uses CURVE (a fresh one if
    none was given, which only a server admitting any client accepts), else None."""
    if info.curve_server_public is None:
        if keypair is not None:
            raise ValueError(
                "curve_keypair was given but the connection info has no curve_server_public: "
                "that server does not use CurveZMQ"
            )
        return None
    if keypair is None:
        return CurveKeyPair.new()
    if isinstance(keypair, CurveKeyPair):
        return keypair
    public, secret = keypair
    return CurveKeyPair(public=public, secret=secret)


class ExecutionClient:
    """Async client of one execution server.

    Use `await ExecutionClient.connect(path_or_info)` or `async with ExecutionClient(info)`.
    Every request has a deadline (`request_timeout`, overridable per call); a request fails
    with `ServerUnavailable` when no server is connected or the connection drops, and with
    `ServerError` when the server refuses it. For a server using CurveZMQ (its connection info
    has `curve_server_public`), pass `curve_keypair` (a `CurveKeyPair` or `(public, secret)`
    Z85 bytes) with a key on the server's allow-list.
    """

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        request_timeout: float = 10.0,
        connect_timeout: float = 2.0,
        subscribe_events: bool = True,
        event_buffer: int = 10_000,
        curve_keypair: CurveKeyPair | tuple[bytes, bytes] | None = None,
    ) -> None:
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("request_timeout and connect_timeout must be positive")
        self._curve = _client_curve(info, curve_keypair)
        self.info = info
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.signals = ExecutionSignals()
        self._subscribe_events = subscribe_events
        self._event_buffer = event_buffer
        self._codec = WireCodec(info.key)
        self._client_id = secrets.token_hex(4)
        self._counter = 0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        # Requests waiting for the connection, in call order (see `_send_request`).
        self._send_gate = asyncio.Lock()
        self._sends_waiting = 0
        self._subscriptions: list[_Subscription] = []
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        #: The newest record of each execution as its events told, and the bytes of the event
        #: (bounded in count like `_last_seq`, and in bytes: results may be large).
        self._records: OrderedDict[str, tuple[ExecutionRecord, int]] = OrderedDict()
        self._records_bytes = 0
        self._resyncing: set[str] = set()
        # Resyncs asked for while one was in flight: its snapshot may predate what was missed
        # since, so another follows it.
        self._resync_again: set[str] = set()
        # Resyncs whose status request failed (server stalled or unreachable): retried on the
        # next heartbeat, the sign that the server answers again.
        self._failed_resyncs: dict[tuple[str, int], _Subscription | None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._control: LoopSocket | None = None
        self._events: LoopSocket | None = None
        self._monitor: LoopSocket | None = None
        self._server_epoch: str | None = None
        self._events_live = asyncio.Event()
        self._closed = False
        self._batcher = SubmitBatcher(
            encode=self._encode_request, exchange=self._exchange_encoded, spawn=self._spawn
        )

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, source: ConnectionInfo | str | os.PathLike[str], **options: Any
    ) -> ExecutionClient:
        """Open a client from a `ConnectionInfo` or the path of a connection file."""
        info = source if isinstance(source, ConnectionInfo) else ConnectionInfo.read(source)
        client = cls(info, **options)
        await client.open()
        return client

    async def open(self) -> None:
        """Create the sockets and start reading them on the running loop."""
        if self._closed:
            raise ClientClosed("this client was closed; create a new one")
        if self._ctx is not None:
            return
        self._ctx = zmq.Context()
        control = self._ctx.socket(zmq.DEALER)
        control.setsockopt(zmq.LINGER, 0)
        control.setsockopt(zmq.IMMEDIATE, 1)
        self._apply_curve(control)
        monitor = control.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        control.connect(self.info.control)
        self._control = LoopSocket(control, self._on_reply, copy_head=2)  # signature, envelope
        self._monitor = LoopSocket(monitor, self._on_monitor_event, copy=True)
        if self._subscribe_events:
            events = self._ctx.socket(zmq.SUB)
            events.setsockopt(zmq.LINGER, 0)
            # Events beyond this wait in the server's queue (EVENTS_SNDHWM), then are dropped
            # there; a gap is resynced. 100,000 here held 230 MiB for a stalled reader.
            events.setsockopt(zmq.RCVHWM, _EVENTS_RCVHWM)
            events.setsockopt(zmq.SUBSCRIBE, b"")
            self._apply_curve(events)
            events.connect(self.info.events)
            # Topic, signature, envelope copied; array frames stay zero-copy.
            self._events = LoopSocket(events, self._on_event, copy_head=3, batch=_FAIRNESS_BATCH)
        for reader in (self._control, self._monitor, self._events):
            if reader is not None:
                reader.start()

    def _apply_curve(self, sock: zmq.Socket[bytes]) -> None:
        if self._curve is not None:
            assert self.info.curve_server_public is not None
            apply_curve_client(sock, self.info.curve_server_public.encode(), self._curve)

    async def close(self) -> None:
        """Cancel the reader tasks, fail pending requests and close every socket."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._fail_pending(ClientClosed("client closed"))
        for reader in (self._monitor, self._control, self._events):
            if reader is not None:
                reader.stop()
        if self._control is not None and self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._control.sock.disable_monitor()
        for reader in (self._monitor, self._control, self._events):
            if reader is not None:
                reader.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self._ctx = self._control = self._events = self._monitor = None

    async def __aenter__(self) -> ExecutionClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def server_epoch(self) -> str | None:
        """The epoch of the server last heard from (a new one means it restarted)."""
        return self._server_epoch

    # -- requests -------------------------------------------------------------------------

    async def ping(self, *, timeout: float | None = None) -> Pong:
        """Round trip to the server; `ServerUnavailable` if it does not answer."""
        return await self._request(Ping(), Pong, timeout)

    async def submit(
        self,
        handler: str,
        params: Mapping[str, Any] | None = None,
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> SubmitReply:
        """Queue one execution of a registered handler with JSON parameters.

        Submissions made in the same turn of the event loop (`asyncio.gather`, a window of
        them) go to the server together, as one `submit_batch` request, in call order; each
        is still accepted or refused on its own (docs/protocol.md §5).
        """
        message = Submit(
            handler=handler,
            params=dict(params or {}),
            compile_only=compile_only,
            compile_artifact_id=compile_artifact_id,
            label=label,
        )
        reply = await self._batcher.submit(message, self._deadline(timeout))
        self._track(reply.execution_id, 0)
        return reply

    @overload
    async def status(self, execution_id: str, *, timeout: float | None = None) -> StatusReply: ...

    @overload
    async def status(
        self, execution_id: None = None, *, timeout: float | None = None
    ) -> ServerStatus: ...

    async def status(
        self, execution_id: str | None = None, *, timeout: float | None = None
    ) -> StatusReply | ServerStatus:
        """One execution's record, latest progress and `seq`; without an id, the server's state."""
        if execution_id is None:
            return await self._request(StatusRequest(execution_id=None), ServerStatus, timeout)
        return await self._request(StatusRequest(execution_id=execution_id), StatusReply, timeout)

    async def cancel(
        self, execution_id: str, *, force: bool = False, timeout: float | None = None
    ) -> CancelReply:
        """Cancel that execution only; `force` ends its worker process at once."""
        return await self._request(
            Cancel(execution_id=execution_id, force=force), CancelReply, timeout
        )

    async def shutdown(self, *, force: bool = False, timeout: float | None = None) -> ShutdownReply:
        """Ask the server to exit: graceful lets running work finish, force ends it now."""
        return await self._request(Shutdown(force=force), ShutdownReply, timeout)

    async def observe(
        self, execution_id: str, *, timeout: float | None = None
    ) -> StatusObservation:
        """The poller's view of one execution: status, record (as a dict), answering epoch."""
        envelope = await self._exchange(StatusRequest(execution_id=execution_id), timeout)
        reply = _expect(envelope.message, StatusReply, "status")
        return StatusObservation(
            status=reply.execution.status,
            payload=reply.execution.to_wire(),
            server_epoch=envelope.server_epoch,
        )

    async def wait(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,
        liveness_timeout: float = 10.0,
        poll_interval: float = 1.0,
    ) -> PollOutcome:
        """Follow one execution to its outcome: looked at once, then woken by its events
        (an `execution` event's record answers at once), polled when none arrive.

        The first look is the record the execution's events last brought, when the client
        still holds it and has no gap to repair in its events; otherwise, and for every later
        poll, a `status` request. Ends `lost` when neither replies nor events show the server
        alive for `liveness_timeout` seconds (or the server restarted), `timed_out` after
        `timeout`.
        """
        first = self._known_record(execution_id)
        if first is not None and first.status.is_terminal:
            # The poller's first look would end the run with it: skip the set-up (a batch
            # waits on thousands of executions, most of them ended by then).
            return terminal_outcome(execution_id, first)

        async def poll(exec_id: str) -> StatusObservation:
            nonlocal first
            if first is not None:
                known, first = first, None
                return known
            return await self.observe(exec_id, timeout=min(self.request_timeout, liveness_timeout))

        def keep_polling(_: str, error: Exception) -> bool:
            # A server that answers "not found" is alive: waiting longer cannot help.
            return not (isinstance(error, ServerError) and error.code == "not_found")

        policy = CallbackExecutionStatusPollPolicy(
            poll_status_fn=poll,
            poll_interval_seconds_value=poll_interval,
            deadline_seconds_value=timeout,
            liveness_timeout_seconds_value=liveness_timeout,
            on_poll_exception_fn=keep_polling,
        )
        return await ExecutionStatusPoller().run(execution_id, policy, signals=self.signals)

    async def _request(self, message: Any, expected: type[_Reply], timeout: float | None) -> _Reply:
        envelope = await self._exchange(message, timeout)
        return _expect(envelope.message, expected, message.TYPE)

    async def _exchange(self, message: Any, timeout: float | None) -> Envelope:
        """Send one request and return the reply's envelope; error replies raise."""
        request_id, frames = self._encode_request(message)
        return await self._exchange_encoded(
            message.TYPE, request_id, frames, self._deadline(timeout)
        )

    def _deadline(self, timeout: float | None) -> float:
        return self.request_timeout if timeout is None else timeout

    def _encode_request(self, message: Message) -> tuple[str, list[Any]]:
        """A fresh request id and the request's frames."""
        self._counter += 1
        request_id = f"{self._client_id}-{self._counter}"
        return request_id, self._codec.encode(message, request_id=request_id)

    async def _exchange_encoded(
        self, what: str, request_id: str, frames: list[Any], deadline: float
    ) -> Envelope:
        """Send an encoded request and return the reply's envelope; error replies raise."""
        if self._closed:
            raise ClientClosed("client is closed")
        if self._control is None:
            await self.open()
        assert self._control is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send_request(frames, min(self.connect_timeout, deadline))
            try:
                reply = await asyncio.wait_for(future, deadline)
            except TimeoutError:
                raise ServerUnavailable(
                    f"no reply to {what!r} from {self.info.control} within {deadline:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed by close() or the monitor after we stopped waiting
        assert isinstance(reply, Envelope)
        if isinstance(reply.message, ErrorReply):
            error = reply.message
            raise ServerError(str(error.code), error.message, error.details)
        return reply

    async def _send_request(self, frames: list[Any], connect_timeout: float) -> None:
        """Send at once when connected; else wait up to `connect_timeout` for the connection.
        Either way requests leave in the order they were made: one that finds others waiting
        for the connection queues behind them (the gate is a FIFO lock)."""
        control = self._control
        assert control is not None
        if not self._sends_waiting:
            try:
                control.send(frames)
                return
            except zmq.Again:  # no connected server (IMMEDIATE), or its queue is full
                pass
        self._sends_waiting += 1
        try:
            async with self._send_gate:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + connect_timeout
                while True:
                    try:
                        control.send(frames)
                        return
                    except zmq.Again:
                        pass
                    remaining = deadline - loop.time()
                    if remaining <= 0 or not await control.wait_writable(remaining):
                        if self._closed:
                            raise ClientClosed("client closed while waiting for the server")
                        raise ServerUnavailable(
                            f"no server reachable at {self.info.control} "
                            f"within {connect_timeout:g} s"
                        )
        finally:
            self._sends_waiting -= 1

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    # -- readers (called by the loop for each message) -----------------------------------------

    def _on_reply(self, frames: list[Any]) -> None:
        try:
            envelope = self._codec.decode(frames)
        except WireError as exc:
            log.warning("dropped an invalid reply: %s", exc)
            pending = self._pending.get(exc.request_id or "")
            if pending is not None and not pending.done():
                pending.set_exception(
                    ServerError(str(exc.code), f"invalid reply from server: {exc.message}")
                )
            return
        self._observe_epoch(envelope.server_epoch)
        future = self._pending.get(envelope.request_id or "")
        if future is not None and not future.done():
            future.set_result(envelope)

    def _on_monitor_event(self, frames: list[Any]) -> None:
        event = parse_monitor_message(frames)
        if event["event"] == zmq.EVENT_DISCONNECTED:
            self._fail_pending(
                ServerUnavailable(f"connection to the server at {self.info.control} was lost")
            )

    def _on_event(self, frames: list[Any]) -> None:
        try:
            envelope = self._codec.decode(frames, topic=True)
        except WireError as exc:
            log.warning("dropped an invalid event: %s", exc)
            return
        # The first event proves the subscription reached the server (PUB drops what it
        # publishes before a subscriber joins: ZeroMQ's slow-joiner behaviour).
        self._events_live.set()
        self._observe_epoch(envelope.server_epoch)
        message = envelope.message
        epoch = envelope.server_epoch
        if isinstance(message, Heartbeat):
            self.signals.notify_heartbeat(epoch)
            self._retry_failed_resyncs()
            self._fan_out(message, None)
        elif isinstance(message, ProgressUpdate | ProgressBatch):
            # A batch is its updates, one execution's, each handled as if it came alone.
            updates = message.updates if isinstance(message, ProgressBatch) else (message,)
            execution_id = updates[0].execution_id
            # Progress shows the server alive; only a status transition is worth a look.
            self.signals.notify_event(execution_id, epoch, wake=False)
            for update in updates:
                self._check_sequence(execution_id, update.seq)
                self._fan_out(update, execution_id)
        elif isinstance(message, ExecutionEvent):
            self._take_execution_event(message, epoch, sum(map(frame_length, frames)))
        elif isinstance(message, ExecutionEvents):
            size = sum(map(frame_length, frames)) // len(message.events)
            for event in message.events:
                self._take_execution_event(event, epoch, size)
        # Cancel notices are for workers; clients ignore them.

    def _take_execution_event(self, event: ExecutionEvent, epoch: str | None, size: int) -> None:
        record = event.record
        execution_id = record.execution_id

        def observe() -> StatusObservation:  # what a status poll would return now
            return StatusObservation(
                status=record.status, payload=record.to_wire(), server_epoch=epoch
            )

        # A woken poller takes this record as its poll's answer (no status request).
        self.signals.notify_event(execution_id, epoch, observe=observe)
        last = self._last_seq.get(execution_id)
        if last is None or event.seq > last:  # not older than a snapshot applied meanwhile
            self._remember(record, size)
        self._check_sequence(execution_id, event.seq)
        self._fan_out(event, execution_id)

    def _observe_epoch(self, epoch: str | None) -> None:
        if epoch is None or epoch == self._server_epoch:
            return
        if self._server_epoch is not None:
            log.warning(
                "server epoch changed %s -> %s: the server restarted", self._server_epoch, epoch
            )
            self._last_seq.clear()
            self._records.clear()
            self._records_bytes = 0
        self._server_epoch = epoch

    def _fan_out(self, event: ClientEvent, execution_id: str | None) -> None:
        for sub in self._subscriptions:
            if sub.wants(execution_id):
                sub.offer(event, execution_id)

    def _remember(self, record: ExecutionRecord, size: int) -> None:
        """Keep the newest record of an execution (oldest forgotten first, see `_records`)."""
        execution_id = record.execution_id
        self._forget_record(execution_id)
        if size > _RECORD_BYTES:
            return
        self._records[execution_id] = (record, size)
        self._records_bytes += size
        while len(self._records) > _TRACKED_EXECUTIONS or self._records_bytes > _RECORD_BYTES:
            _, (_, dropped) = self._records.popitem(last=False)
            self._records_bytes -= dropped

    def _forget_record(self, execution_id: str) -> None:
        _, size = self._records.pop(execution_id, (None, 0))
        self._records_bytes -= size

    def _known_record(self, execution_id: str) -> StatusObservation | None:
        """What a status poll would answer now, from the events alone, if they can tell: the
        client holds the execution's newest record and none of its events is missing."""
        entry = self._records.get(execution_id)
        if entry is None or execution_id in self._resyncing or not self._events_live.is_set():
            return None
        record = entry[0]
        return StatusObservation(
            status=record.status, payload=record.to_wire(), server_epoch=self._server_epoch
        )

    # -- gap detection --------------------------------------------------------------------

    def _track(self, execution_id: str, seq: int) -> None:
        self._last_seq.setdefault(execution_id, seq)
        self._last_seq.move_to_end(execution_id)
        while len(self._last_seq) > _TRACKED_EXECUTIONS:
            self._last_seq.popitem(last=False)

    def _check_sequence(self, execution_id: str, seq: int) -> None:
        last = self._last_seq.get(execution_id)
        if last is None:
            # First sight of an execution we did not submit: nothing to compare against.
            self._track(execution_id, seq)
            return
        if seq <= last:
            return  # duplicate or older than a snapshot already applied
        self._last_seq[execution_id] = seq
        self._last_seq.move_to_end(execution_id)
        if seq > last + 1:
            self._schedule_resync(execution_id)

    def _schedule_resync(self, execution_id: str) -> None:
        if self._closed:
            return
        if execution_id in self._resyncing:
            self._resync_again.add(execution_id)
            return
        self._resyncing.add(execution_id)
        self._spawn(self._resync(execution_id), f"resync-{execution_id}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"zmqruntime-{name}")
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _resync(self, execution_id: str, only: _Subscription | None = None) -> None:
        """Fetch a snapshot and deliver it to every iterator of the execution (or `only`)."""
        again = False
        try:
            snapshot = await self.status(execution_id)
        except ServerUnavailable as exc:
            log.warning("resync of %s failed, retried on the next heartbeat: %s", execution_id, exc)
            self._failed_resyncs[(execution_id, id(only))] = only
            return
        except (ServerError, ClientClosed) as exc:  # forgotten by the server, or closing
            log.warning("resync of %s failed: %s", execution_id, exc)
            return
        finally:
            if only is None:
                self._resyncing.discard(execution_id)
                # A failed resync is retried (or given up) as a whole, so no second one is due.
                again = execution_id in self._resync_again
                self._resync_again.discard(execution_id)
        last = self._last_seq.get(execution_id, 0)
        self._last_seq[execution_id] = max(last, snapshot.seq)
        if snapshot.seq > last:  # the record kept may be older than the snapshot: drop it
            self._forget_record(execution_id)
        event = Resynced(execution_id=execution_id, snapshot=snapshot)
        if only is not None:
            only.offer(event, execution_id)
            return
        self._fan_out(event, execution_id)
        if again:  # what was missed while this snapshot was on its way may be newer than it
            self._schedule_resync(execution_id)

    def _retry_failed_resyncs(self) -> None:
        failed, self._failed_resyncs = self._failed_resyncs, {}
        for (execution_id, _), only in failed.items():
            if only is None:
                self._schedule_resync(execution_id)
            elif only in self._subscriptions:  # that iterator is still reading
                self._spawn(self._resync(execution_id, only=only), f"resync-{execution_id}")

    # -- event iteration ------------------------------------------------------------------

    async def events(self, execution_id: str | None = None) -> AsyncGenerator[ClientEvent, None]:
        """Yield events for one execution (or all, with heartbeats) as they arrive.

        The subscription starts at the first `__anext__`, once the client's event stream is
        live (at most one server heartbeat after `open()`). An iterator for one execution
        starts with a `Resynced` snapshot of it, and after any lost event (a `seq` gap, or
        this iterator falling behind its buffer) another `Resynced` stands in for what was
        missed: events plus snapshots never leave a hole.
        """
        if not self._subscribe_events:
            raise RuntimeError("this client was created with subscribe_events=False")
        if self._ctx is None:
            await self.open()
        sub = _Subscription(execution_id, self._event_buffer)
        self._subscriptions.append(sub)
        try:
            # Until the subscription is live, events may be lost without any gap to show it;
            # once it is, a snapshot sums up whatever this iterator missed before (the server's
            # heartbeat guarantees the wait ends within one heartbeat interval).
            await self._events_live.wait()
            if execution_id is not None:
                self._track(execution_id, 0)
                self._spawn(self._resync(execution_id, only=sub), f"resync-{execution_id}")
            while True:
                event = await sub.queue.get()
                # Events this iterator had no room for are resynced once it reads again, so
                # the snapshot lands behind what is already buffered, never lost to a full queue.
                while sub.overflowed:
                    self._schedule_resync(sub.overflowed.pop())
                yield event
        finally:
            self._subscriptions.remove(sub)


def _expect(message: Any, expected: type[_Reply], request_type: str) -> _Reply:
    if not isinstance(message, expected):
        got = type(message).__name__
        raise ServerError(
            "invalid_request",
            f"expected a {expected.__name__} reply to {request_type!r}, got {got}",
        )
    return message
