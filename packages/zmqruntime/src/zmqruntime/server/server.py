"""`ExecutionServer`: the sockets, loops and executor around the `ExecutionScheduler`.

Three sockets on one asyncio loop (docs/protocol.md §1): a ROUTER for control requests, a PUB
for events, a PULL for worker reports. Requests are answered as they arrive, in any number from
any number of clients, each reply carrying its request's `request_id`: answering never waits on
anything (the scheduler is synchronous, a ROUTER send never blocks), so no request can hold up
another and there is no per-request task to pay for. Every frame set goes through
`WireCodec.decode` first; a refused one is counted (and answered, on the control channel), and
no exception raised while handling one message can stop a loop. All decisions are the
scheduler's; this module carries out its effects (publish, kill a worker), submits its
dispatches to the `WorkerPool`, and feeds executor results back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import BrokenExecutor, Future
from concurrent.futures import CancelledError as FutureCancelled
from types import TracebackType
from typing import Any, Final, Self

import zmq
import zmq.asyncio

from zmqruntime.codec import PROTOCOL_VERSION, TooLarge, WireCodec, WireError, send_frames
from zmqruntime.connection import ConnectionInfo
from zmqruntime.curve import (
    CurveAuthenticator,
    CurveConfig,
    CurveKeyPair,
    apply_curve_server,
    start_authenticator,
)
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.loop_socket import LoopSocket
from zmqruntime.messages import (
    Cancel,
    CancelNotice,
    ErrorCode,
    ErrorReply,
    ExecutionEvent,
    ExecutionEvents,
    JobEnded,
    Message,
    Ping,
    Pong,
    ProgressBatch,
    ServerStatus,
    Shutdown,
    ShutdownReply,
    StatusRequest,
    Submit,
    SubmitBatch,
    SubmitBatchReply,
    SubmitOutcome,
    WorkerInfo,
    WorkerStarted,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server.completions import CompletionInbox
from zmqruntime.server.counters import Counters
from zmqruntime.server.handlers import HandlerFunction, HandlerRegistry
from zmqruntime.server.journal import ExecutionJournal
from zmqruntime.server.process_workers import AHEAD_DEPTH, ProcessWorkers
from zmqruntime.server.record_batch import EXECUTIONS_TOPIC, RecordBatch
from zmqruntime.server.scheduler import (
    Dispatch,
    ExecutionScheduler,
    KillWorker,
    Publish,
    RequestRefused,
)
from zmqruntime.server.update_batch import UPDATE_BATCH_BYTES, UpdateBatches
from zmqruntime.server.worker_main import WorkerConfig
from zmqruntime.server.worker_pool import ExecutorFactory, WorkerPool
from zmqruntime.server.worker_runtime import (
    JobOutcome,
    JobSpec,
    WorkerCurve,
    cancelled_outcome,
    failed_outcome,
    wire_size,
    within_result_limit,
)
from zmqruntime.server.worker_stats import WorkerStats
from zmqruntime.signing import new_key

__all__ = ["ExecutionServer", "ServerStartError"]

log = logging.getLogger(__name__)

SERVER_NAME: Final = "zmqruntime"
#: Outgoing events queued per subscriber before the PUB socket drops (seq gaps show it).
EVENTS_SNDHWM: Final = 10_000
#: Worker reports queued in the server before workers' sends start to wait.
PROGRESS_RCVHWM: Final = 10_000
#: How long a finished attempt waits for the next of its reports still in flight (counted
#: from the last one that arrived) before its end state is recorded without them.
REPORT_GRACE_SECONDS: Final = 1.0
#: Bounded grace at the final close so the shutdown reply and last events get out.
FINAL_LINGER_MS: Final = 1000
#: Room in a message for an `execution` event's envelope and record fields besides the
#: result and the label.
RECORD_ALLOWANCE: Final = 4096
#: A forced shutdown waits this long for executions it cannot kill (thread executors).
FORCED_GRACE_SECONDS: Final = 10.0
#: Longest the `running` event of an execution is held back after its start, so one that ends
#: within it publishes its end alone (one event, not two: short jobs cost less to everyone).
START_EVENT_DELAY: Final = 0.005
#: A loop reading a socket yields to the others after this many messages in a row.
FAIRNESS_BATCH: Final = 64
#: Worker reports handled in a row: fewer, so a request waits behind at most this many.
REPORT_BATCH: Final = 16


#: A finished executor future with the attempt it ran and the pool generation it ran on.
_Finished = tuple[Dispatch, int, Future[JobOutcome]]


class ServerStartError(OSError):
    """The server could not start: a port is in use, the host is invalid, the pool failed."""


class ExecutionServer:
    """An execution server on loopback (by default) speaking docs/protocol.md.

    `handlers` maps request handler names to importable module-level functions taking a
    `JobContext`, or is a `"package.module:ATTR"` string naming such a mapping. Ports of 0
    are chosen by the OS. `executor_factory(workers)` builds an executor to run handlers on
    (by default the server starts worker processes of its own, docs/protocol.md §7); it is
    called again to replace an executor that broke. `clock` (monotonic
    seconds) drives artifact expiry and uptime, and can be replaced in tests. With `curve`,
    every socket is a CurveZMQ server admitting the configured clients and the server's own
    workers (docs/scale-out.md).
    """

    def __init__(
        self,
        handlers: Mapping[str, HandlerFunction] | str,
        *,
        host: str = "127.0.0.1",
        control_port: int = 0,
        events_port: int = 0,
        progress_port: int = 0,
        workers: int | None = None,
        executor_factory: ExecutorFactory | None = None,
        heartbeat_interval: float = 1.0,
        artifact_ttl: float = 1800.0,
        max_message_size: int = 64 * 2**20,
        key: bytes | None = None,
        max_records: int = 10_000,
        clock: Callable[[], float] | None = None,
        journal_path: str | os.PathLike[str] | None = None,
        curve: CurveConfig | None = None,
    ) -> None:
        self.handlers = HandlerRegistry(handlers)
        self.host = host
        self._ports = (control_port, events_port, progress_port)
        self.workers = workers if workers is not None else (os.cpu_count() or 2)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers!r}")
        self._executor_factory = executor_factory
        self.max_message_size = max_message_size
        if key is not None and len(key) < 16:
            raise ValueError("the signing key must have at least 16 bytes (32 recommended)")
        self._key = key if key is not None else new_key()
        self.server_epoch = uuid.uuid4().hex
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.scheduler = ExecutionScheduler(
            self.handlers,
            # Only our own workers get attempts ahead (one runs and up to AHEAD_DEPTH are sent
            # ahead; while they are busy with slow jobs, `has_room` keeps at most one per worker
            # waiting here, encoded, for the moment a `job_ended` arrives): another executor
            # (Dask) queues and schedules by itself, and a task waiting on one of its workers
            # dies with it.
            slots=self.workers * (1 + AHEAD_DEPTH if executor_factory is None else 1),
            max_records=max_records,
            artifact_ttl=artifact_ttl,
            heartbeat_interval=heartbeat_interval,
            **extra,
        )
        self.scheduler.defer_starts = True  # published by `_publish_starts`
        self._start_timer: asyncio.TimerHandle | None = None
        self._codec = WireCodec(self._key, max_message_size=max_message_size)
        self._info: ConnectionInfo | None = None
        self._context: zmq.asyncio.Context | None = None
        self._control: LoopSocket | None = None
        self._events: zmq.Socket[bytes] | None = None
        self._progress: LoopSocket | None = None
        self._pool: WorkerPool | None = None
        self._workers: ProcessWorkers | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._attempts: dict[int, tuple[int, Future[JobOutcome]]] = {}
        self._attempt_tasks: set[asyncio.Task[None]] = set()
        self._completions: CompletionInbox[_Finished] | None = None
        self._handled_breaks: set[int] = set()
        self._report_waiters: dict[str, asyncio.Event] = {}
        self._stats = WorkerStats()
        self._drained = asyncio.Event()
        self._forced = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._journal_path = journal_path
        self.journal: ExecutionJournal | None = None
        self.curve = curve
        #: The key pair the server's workers connect with (admitted automatically).
        self._worker_keys = CurveKeyPair.new() if curve is not None else None
        self._authenticator: CurveAuthenticator | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def connection_info(self) -> ConnectionInfo:
        """Endpoints, key, epoch and pid; available once `start()` returned."""
        if self._info is None:
            raise RuntimeError("the server is not started; await server.start() first")
        return self._info

    @property
    def counters(self) -> Counters:
        """What the server refused and ran so far (plus progress_dropped, internal_errors)."""
        return self.scheduler.counters

    @property
    def process_workers(self) -> ProcessWorkers | None:
        """The server's own worker processes, once started (None with another executor)."""
        return self._workers

    @property
    def curve_refusals(self) -> int:
        """CurveZMQ handshakes refused because the client key is not on the allow-list."""
        return 0 if self._authenticator is None else self._authenticator.denied

    @property
    def closed(self) -> bool:
        """True once the server has shut down and closed its sockets."""
        return self._closed.is_set()

    async def start(self) -> ConnectionInfo:
        """Bind the three sockets, start the worker pool and the loops; returns the info."""
        if self._info is not None:
            return self._info
        if self._journal_path is not None and self.journal is None:
            self._open_journal(self._journal_path)
        self._context = zmq.asyncio.Context()
        if self.curve is not None:
            assert self._worker_keys is not None
            self._authenticator = start_authenticator(
                self._context, self.curve, [self._worker_keys.public]
            )
        sockets: list[zmq.Socket[bytes]] = []
        try:
            control = self._bind(zmq.ROUTER, self._ports[0], "control")
            sockets.append(control)
            events = self._bind(zmq.PUB, self._ports[1], "events")
            sockets.append(events)
            progress = self._bind(zmq.PULL, self._ports[2], "progress")
            sockets.append(progress)
            jobs = None
            if self._executor_factory is None:
                # Only our own local workers connect to it: loopback, whatever `host` is.
                jobs = self._bind(zmq.ROUTER, 0, "jobs", "127.0.0.1")
                sockets.append(jobs)
        except ServerStartError:
            for sock in sockets:
                sock.close(linger=0)
            self._destroy_context()
            self._close_journal()
            raise
        self._events = events
        self._info = ConnectionInfo(
            control=self._endpoint(control),
            events=self._endpoint(events),
            progress=self._endpoint(progress),
            key=self._key,
            server_epoch=self.server_epoch,
            pid=os.getpid(),
            protocol=PROTOCOL_VERSION,
            curve_server_public=None if self.curve is None else self.curve.server.public.decode(),
        )
        try:
            if jobs is None:
                assert self._executor_factory is not None
                self._pool = WorkerPool(self._executor_factory, self.workers)
            else:
                self._workers = self._start_workers(jobs)
        except Exception as exc:
            for sock in sockets:
                sock.close(linger=0)
            self._destroy_context()
            self._close_journal()
            self._info = None
            raise ServerStartError(f"cannot start the worker pool: {exc}") from exc
        # Requests and reports are handled in the loop's reader callbacks, in batches of
        # FAIRNESS_BATCH so neither channel can starve the other or the heartbeat.
        self._control = LoopSocket(
            control,
            self._handle_request,
            on_error=self._socket_failed,
            copy_head=3,  # routing id, signature, envelope
            batch=FAIRNESS_BATCH,
        )
        self._progress = LoopSocket(
            progress,
            self._handle_report,
            on_error=self._socket_failed,
            copy_head=2,  # signature, envelope
            batch=REPORT_BATCH,
            after_batch=self._pump,  # dispatch and publish once per batch of reports
        )
        self._control.start()
        self._progress.start()
        self._completions = CompletionInbox(asyncio.get_running_loop(), self._attempts_done)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="zmqruntime-server-heartbeat"),
        ]
        for loop_task in self._loops:
            loop_task.add_done_callback(self._loop_ended)
        log.info(
            "execution server %s listening: control %s, events %s, progress %s",
            self.server_epoch,
            self._info.control,
            self._info.events,
            self._info.progress,
        )
        return self._info

    async def serve_forever(self) -> None:
        """Start if needed, then run until the server has shut down."""
        await self.start()
        await self._closed.wait()

    def request_shutdown(self, *, force: bool = False) -> list[str]:
        """Begin a shutdown without waiting for it (signal handlers use this); returns the ids
        of the executions it cancelled. Calling it again with `force=True` escalates."""
        cancelled = self._begin_shutdown(force)
        self._ensure_closing()
        return cancelled

    async def shutdown(self, *, force: bool = False) -> list[str]:
        """Shut down and wait until every socket is closed and every worker has exited.

        Graceful: refuse new submissions, cancel the queue, let running executions finish.
        Forced: cancel everything now and end the worker processes. Returns the ids this call
        cancelled.
        """
        if self._info is None:
            self._closed.set()
            return []
        cancelled = self.request_shutdown(force=force)
        await self._closed.wait()
        return cancelled

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(force=exc_type is not None)

    # -- the journal ----------------------------------------------------------------------

    def _open_journal(self, path: str | os.PathLike[str]) -> None:
        """Open the SQLite journal and take back the previous run's records."""
        try:
            journal = ExecutionJournal(
                path,
                server_epoch=self.server_epoch,
                max_records=self.scheduler.lifecycle.max_records,
            )
            recovered = journal.recover()
        except (OSError, sqlite3.Error) as exc:
            raise ServerStartError(f"cannot open the journal {path}: {exc}") from exc
        self.scheduler.restore(recovered.records, recovered.lost_artifacts)
        self.journal = journal
        log.info("journal %s: %d records of earlier runs", path, len(recovered.records))

    def _journal_effects(self) -> None:
        """Commit the record changes among the scheduler's pending effects to the journal.

        Called before those changes become visible (events published, the request's reply
        sent), so whatever a client has seen survives the server being killed right after.
        One transaction per batch of effects; progress alone costs nothing here.
        """
        journal = self.journal
        if journal is None:
            return
        for effect in self.scheduler.pending_effects():
            if isinstance(effect, Publish) and isinstance(effect.message, ExecutionEvent):
                record = effect.message.record
                journal.record(record)
                if record.compile_only and record.status is ExecutionStatus.COMPLETE:
                    journal.artifact(record.execution_id, self.scheduler.artifacts.ttl)
        try:
            journal.flush()
        except Exception:
            self._internal_error("writing the journal")

    def _close_journal(self) -> None:
        if self.journal is not None:
            try:
                self.journal.close()
            except Exception:
                self._internal_error("closing the journal")
            self.journal = None

    # -- sockets --------------------------------------------------------------------------

    def _destroy_context(self) -> None:
        """End the authenticator and the context of a start that failed."""
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    def _start_workers(self, jobs: zmq.Socket[bytes]) -> ProcessWorkers:
        """Spawn the server's own worker processes on the jobs socket."""
        assert self._info is not None
        config: WorkerConfig = {
            "identity": "",  # each worker gets its own
            "jobs_endpoint": self._endpoint(jobs),
            "progress_endpoint": self._info.progress,
            "events_endpoint": self._info.events,
            "key": self._key.hex(),
            "curve": self._worker_curve(),
            "max_message_size": self.max_message_size,
            "server_pid": os.getpid(),
        }
        workers = ProcessWorkers(
            count=self.workers,
            jobs=jobs,
            codec=WireCodec(self._key, max_message_size=3 * self.max_message_size),
            config=config,
            on_handed=self._handed_to_worker,
            on_lost=self._workers_lost,
            after_batch=self._pump,
            on_error=self._socket_failed,
        )
        workers.start()
        return workers

    def _worker_curve(self) -> WorkerCurve | None:
        """The CURVE keys workers connect with, as plain text for the job spec."""
        if self.curve is None or self._worker_keys is None:
            return None
        return {
            "server_public": self.curve.server.public.decode(),
            "public": self._worker_keys.public.decode(),
            "secret": self._worker_keys.secret.decode(),
        }

    def _bind(self, kind: int, port: int, name: str, host: str | None = None) -> zmq.Socket[bytes]:
        assert self._context is not None
        sock: zmq.Socket[bytes] = zmq.Socket(self._context, kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        if self.curve is not None:
            apply_curve_server(sock, self.curve.server)
        if kind == zmq.PUB:
            sock.setsockopt(zmq.SNDHWM, EVENTS_SNDHWM)
        elif kind == zmq.PULL:
            sock.setsockopt(zmq.RCVHWM, PROGRESS_RCVHWM)
        address = f"tcp://{host or self.host}:{port if port else '*'}"
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ServerStartError(f"cannot bind the {name} socket to {address}: {exc}") from exc
        return sock

    @staticmethod
    def _endpoint(sock: zmq.Socket[bytes]) -> str:
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(endpoint, bytes)
        return endpoint.decode()

    def _send_event(self, topic: str, message: Message) -> None:
        if self._events is None:
            return
        frames = self._codec.encode(message, server_epoch=self.server_epoch, topic=topic.encode())
        # A PUB send never waits: beyond SNDHWM a slow subscriber's events are dropped, which
        # it sees as a gap in `seq` and repairs from a status snapshot.
        send_frames(self._events, frames)

    def _reply(self, identity: Any, message: Message, request_id: str | None) -> None:
        assert self._control is not None
        try:
            frames = self._codec.encode(
                message, request_id=request_id, server_epoch=self.server_epoch
            )
        except TooLarge as exc:
            refusal = ErrorReply(code=ErrorCode.TOO_LARGE, message=f"the reply is too large: {exc}")
            frames = self._codec.encode(
                refusal, request_id=request_id, server_epoch=self.server_epoch
            )
        try:
            # A ROUTER send never waits: a peer gone or with a full queue loses the reply.
            self._control.send([identity, *frames])
        except zmq.ZMQError as exc:
            log.warning("a reply could not be sent: %r", exc)

    # -- effects and dispatching ----------------------------------------------------------

    def _apply_effects(self) -> None:
        withdrawn = False
        records = RecordBatch(self.max_message_size // 2)
        updates = UpdateBatches(min(UPDATE_BATCH_BYTES, self.max_message_size // 2))
        while True:
            self._journal_effects()
            effects = self.scheduler.drain()
            if not effects:
                break
            for effect in effects:
                # Events are gathered into batches of one kind at a time, and any other effect
                # publishes what was gathered first: each execution's events keep their order.
                try:
                    if isinstance(effect, Publish):
                        message = effect.message
                        if type(message) is ProgressUpdate:
                            self._publish_records(records)
                            full = updates.add(message)
                            if full is not None:
                                self._publish_updates(full)
                            continue
                        if records.takes(message):
                            self._publish_all_updates(updates)
                            if records.full:
                                self._publish_records(records)
                            continue
                    self._publish_records(records)
                    self._publish_all_updates(updates)
                    if isinstance(effect, Publish):
                        self._send_event(effect.topic, effect.message)
                        if isinstance(effect.message, CancelNotice):
                            withdrawn |= self._withdraw(effect.message.execution_id)
                    elif isinstance(effect, KillWorker):
                        why = f"force-cancel of {effect.execution_id}"
                        if self._stats.kill(effect.pid, why) and self._workers is not None:
                            self._workers.retire(effect.pid)  # no job for it on its way out
                except Exception:
                    self._internal_error(f"carrying out {effect!r}")
            try:
                self._publish_records(records)
                self._publish_all_updates(updates)
            except Exception:
                self._internal_error("publishing gathered events")
        if self.scheduler.drained:
            self._drained.set()
        if self.scheduler.starts_pending and self._start_timer is None:
            loop = asyncio.get_running_loop()
            self._start_timer = loop.call_later(START_EVENT_DELAY, self._publish_starts)
        if withdrawn:
            self._pump()  # the slots they held are free

    def _publish_records(self, records: RecordBatch) -> None:
        """Publish the `execution` events gathered: one alone, several as one `executions`."""
        events = records.take()
        if len(events) == 1:
            self._send_event(events[0].record.execution_id, events[0])
        elif events:
            try:
                self._send_event(EXECUTIONS_TOPIC, ExecutionEvents(events=tuple(events)))
            except TooLarge:  # the estimate was wrong: one by one, then
                for event in events:
                    self._send_event(event.record.execution_id, event)

    def _publish_all_updates(self, batches: UpdateBatches) -> None:
        if batches:
            for updates in batches.take():
                self._publish_updates(updates)

    def _publish_updates(self, updates: list[ProgressUpdate]) -> None:
        """Publish one execution's gathered updates: one alone, several as `progress_batch`."""
        topic = updates[0].execution_id
        if len(updates) == 1:
            self._send_event(topic, updates[0])
            return
        try:
            self._send_event(topic, ProgressBatch(updates=tuple(updates)))
        except TooLarge:  # the estimate was wrong: one by one, then
            for update in updates:
                self._send_event(topic, update)

    def _publish_starts(self) -> None:
        """Publish the `running` events held back (see `START_EVENT_DELAY`)."""
        self._start_timer = None
        if self._events is None:
            return
        self.scheduler.publish_started()
        self._apply_effects()

    def _withdraw(self, execution_id: str) -> bool:
        """A cancelled attempt still waiting for one of our workers never goes out: its slot
        is freed now, and no worker is started (or, if forced, killed) for nothing."""
        dispatch = None if self._workers is None else self._workers.withdraw(execution_id)
        if dispatch is None:
            return False
        self._finish(dispatch, cancelled_outcome(execution_id))
        return True

    def _pump(self) -> None:
        """Submit dispatches while the scheduler has free slots and waiting work (and our own
        workers have room, see `ProcessWorkers.has_room`); then carry out the effects."""
        if self._closed.is_set() or (self._pool is None and self._workers is None):
            return
        workers = self._workers
        while (workers is None or workers.has_room()) and (
            dispatch := self.scheduler.next_dispatch()
        ) is not None:
            try:
                if workers is not None:
                    workers.dispatch(dispatch, self._result_limit(dispatch.execution_id))
                elif not self._submit_to_pool(dispatch):
                    break
            except Exception as exc:
                log.exception("the executor refused %s", dispatch.execution_id)
                self._forget_attempt(dispatch)
                self.scheduler.finish(
                    dispatch.execution_id,
                    dispatch.attempt,
                    failed_outcome(ErrorCode.INTERNAL, f"the executor refused the job: {exc!r}"),
                )
        self._apply_effects()

    def _submit_to_pool(self, dispatch: Dispatch) -> bool:
        """Submit one attempt to the executor; False if dispatching must stop for now."""
        pool = self._pool
        assert pool is not None
        assert self._info is not None
        job: JobSpec = {
            "execution_id": dispatch.execution_id,
            "attempt": dispatch.attempt,
            "handler": dispatch.handler,
            "handler_ref": dispatch.handler_ref,
            "params": dispatch.params,
            "artifact": dispatch.artifact,
            "compile_only": dispatch.compile_only,
            "progress_endpoint": self._info.progress,
            "events_endpoint": self._info.events,
            "key": self._key.hex(),
            "curve": self._worker_curve(),
        }
        try:
            generation, future = pool.submit(job)
        except BrokenExecutor as exc:
            # The pool broke before we noticed: this attempt never started; retry it on a
            # fresh pool (the scheduler bounds how often).
            self.scheduler.lost([(dispatch.execution_id, dispatch.attempt)], {}, repr(exc))
            if self.scheduler.forced:
                return False
            pool.replace(pool.generation)
            return True
        self._attempts[dispatch.attempt] = (generation, future)
        future.add_done_callback(functools.partial(self._attempt_finished, dispatch, generation))
        return True

    def _job_ended(self, message: JobEnded) -> None:
        """One of our workers reported how an attempt ended (after its other reports)."""
        workers = self._workers
        ended = message.execution_id, message.attempt, message.pid
        dispatch = None if workers is None else workers.ended(*ended)
        if workers is None or dispatch is None:
            self.counters.rejected_malformed += 1
            log.info("ignored the end of attempt %d: no worker of ours holds it", message.attempt)
            return
        outcome: JobOutcome = {
            "kind": message.status.value,  # type: ignore[typeddict-item]
            "result": message.result,
            "error": None if message.error is None else message.error.to_wire(),
            "reports": 0,
        }
        try:
            self._finish(dispatch, outcome, sized=True)  # the worker held it to result_limit
        except Exception as exc:
            self._finish_failed(dispatch, exc)
        workers.hand_out()  # its worker's next attempt starts after this end, never before

    def _handed_to_worker(self, dispatch: Dispatch, pid: int) -> None:
        """One of our workers is free to run an attempt it was handed: it runs from now on,
        in `pid`."""
        self.scheduler.worker_started(dispatch.execution_id, pid, dispatch.attempt)
        self._stats.watch(pid)

    def _workers_lost(
        self, dispatches: list[Dispatch], dead: Mapping[int, str], cause: str
    ) -> None:
        """A worker died (or none can start): the attempts it held are lost."""
        try:
            attempts = [(d.execution_id, d.attempt) for d in dispatches]
            self.scheduler.lost(attempts, dead, cause)
            for dispatch in dispatches:
                self._forget_attempt(dispatch)
        except Exception:
            self._internal_error("handling a lost worker")
        self._pump()

    def _attempt_finished(
        self, dispatch: Dispatch, generation: int, future: Future[JobOutcome]
    ) -> None:
        """Runs in whichever thread finished the future (the executor's): hand it to the loop."""
        if self._completions is not None:
            self._completions.put((dispatch, generation, future))

    def _attempts_done(self, batch: list[_Finished]) -> None:
        """Executor futures that finished (handed over by the `CompletionInbox`, on the loop):
        record each outcome, then dispatch what the freed slots allow."""
        for dispatch, generation, future in batch:
            self._settle(dispatch, generation, future)
        self._pump()

    def _settle(self, dispatch: Dispatch, generation: int, future: Future[JobOutcome]) -> None:
        try:
            try:
                outcome = future.result()
            except BrokenExecutor as exc:
                self._pool_broken(generation, exc)  # sorts every attempt of that pool
                self._forget_attempt(dispatch)
                return
            except FutureCancelled:  # cancelled by the executor's shutdown: the server closes
                self._forget_attempt(dispatch)
                return
            except BaseException as exc:
                outcome = failed_outcome(
                    ErrorCode.INTERNAL,
                    f"the executor could not run the job: {exc!r}",
                    "".join(traceback.format_exception(exc)),
                )
            if self._reports_missing(dispatch.execution_id, outcome["reports"]):
                task = asyncio.create_task(
                    self._finish_after_reports(dispatch, outcome),
                    name=f"zmqruntime-attempt-{dispatch.execution_id}",
                )
                self._attempt_tasks.add(task)
                task.add_done_callback(self._attempt_tasks.discard)
                return
            self._finish(dispatch, outcome)
        except Exception as exc:
            self._finish_failed(dispatch, exc)

    async def _finish_after_reports(self, dispatch: Dispatch, outcome: JobOutcome) -> None:
        try:
            await self._await_reports(dispatch.execution_id, outcome["reports"])
            self._finish(dispatch, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._finish_failed(dispatch, exc)
        self._pump()

    def _finish(self, dispatch: Dispatch, outcome: JobOutcome, *, sized: bool = False) -> None:
        """Record the attempt's outcome; unless `sized`, a result too large for its event
        fails it first."""
        try:
            if not sized:
                outcome = within_result_limit(outcome, self._result_limit(dispatch.execution_id))
            self.scheduler.finish(dispatch.execution_id, dispatch.attempt, outcome)
        finally:
            self._forget_attempt(dispatch)

    def _finish_failed(self, dispatch: Dispatch, exc: Exception) -> None:
        """Finishing the attempt failed inside the server: never leave it running forever."""
        self._internal_error(f"finishing attempt {dispatch.attempt}")
        with contextlib.suppress(Exception):
            self.scheduler.finish(
                dispatch.execution_id,
                dispatch.attempt,
                failed_outcome(ErrorCode.INTERNAL, f"internal server error: {exc!r}"),
            )
        self._forget_attempt(dispatch)

    def _forget_attempt(self, dispatch: Dispatch) -> None:
        self._attempts.pop(dispatch.attempt, None)
        self._report_waiters.pop(dispatch.execution_id, None)

    def _result_limit(self, execution_id: str) -> int:
        """Most bytes the execution's result may take so its `execution` event still fits."""
        record = self.scheduler.lifecycle.get(execution_id)
        label = record.label if record is not None else None
        taken = wire_size(label) if label else 0
        return max(1, self.max_message_size - RECORD_ALLOWANCE - taken)

    def _reports_missing(self, execution_id: str, expected: int) -> bool:
        """True if the attempt's outcome must wait for reports still on their way."""
        record = self.scheduler.lifecycle.get(execution_id)
        if record is None or record.status.is_terminal:
            return False  # its outcome will be ignored anyway
        return self.scheduler.reports_seen(execution_id) < expected

    async def _await_reports(self, execution_id: str, expected: int) -> None:
        """Wait until the attempt's reports have all arrived, so none lands after its end
        state. The wait ends `REPORT_GRACE_SECONDS` after the last report that did arrive: a
        backlog still flowing in (a flood of progress) is waited out, while a report lost on
        the way only costs the grace period."""
        if not self._reports_missing(execution_id, expected):
            return
        seen = self.scheduler.reports_seen(execution_id)
        event = self._report_waiters.setdefault(execution_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPORT_GRACE_SECONDS
        while seen < expected:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info(
                    "%d of %d reports of %s missing after the grace period",
                    expected - seen,
                    expected,
                    execution_id,
                )
                return
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
            now_seen = self.scheduler.reports_seen(execution_id)
            if now_seen > seen:  # still flowing in: the grace restarts from this report
                seen = now_seen
                deadline = loop.time() + REPORT_GRACE_SECONDS

    def _pool_broken(self, generation: int, exc: BaseException) -> None:
        """The executor of `generation` broke: sort its attempts into lost and finished."""
        if generation in self._handled_breaks or self._pool is None:
            self._pump()
            return
        self._handled_breaks.add(generation)
        lost: list[tuple[str, int]] = []
        for execution_id, attempt in self.scheduler.in_flight():
            gen, future = self._attempts.get(attempt, (None, None))
            if gen != generation or future is None:
                continue
            if future.done() and not future.cancelled() and future.exception() is None:
                continue  # finished before the breakage; its own task records the outcome
            lost.append((execution_id, attempt))
        dead = self._pool.dead_workers(generation)
        log.warning(
            "worker pool %d broke (%s); dead workers: %s; attempts lost: %s",
            generation,
            exc,
            dead or "none found",
            [eid for eid, _ in lost],
        )
        self.scheduler.lost(lost, dead, str(exc) or type(exc).__name__)
        if not self.scheduler.forced:
            self._pool.replace(generation)
        self._pump()

    # -- loops ----------------------------------------------------------------------------

    def _worker_infos(self) -> list[WorkerInfo]:
        busy = self.scheduler.busy_workers()
        pool_pids: set[int] = set()
        for workers in (self._pool, self._workers):
            if workers is not None:
                pool_pids |= workers.process_pids()
        return self._stats.infos(pool_pids | set(busy), busy)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """The heartbeat loop only ends by cancellation at close; if it dies otherwise, a
        half-working server would be worse than none: shut down, so clients see it gone."""
        if task.cancelled() or self._closing is not None:
            return
        self._fatal(task.get_name(), task.exception())

    def _socket_failed(self, exc: BaseException) -> None:
        """A socket broke under its reader: end the server like a dead loop."""
        if self._closing is None:
            self._fatal("a socket reader", exc)

    def _fatal(self, what: str, exc: BaseException | None) -> None:
        self.scheduler.counters.internal_errors += 1
        log.critical("%s stopped: %r; shutting down", what, exc)
        self.request_shutdown(force=True)

    def _internal_error(self, what: str) -> None:
        self.scheduler.counters.internal_errors += 1
        log.exception("internal error while %s", what)

    def _handle_request(self, frames: list[Any]) -> None:
        """Decode, answer and reply to one request, all without waiting on anything.

        No request handler blocks or awaits (the scheduler is synchronous and bounded) and a
        ROUTER send never waits (a full peer queue drops), so one request can never hold up
        the next; no exception raised here can end the control loop.
        """
        identity, payload = frames[0], frames[1:]
        request_id: str | None = None
        try:
            try:
                envelope = self._codec.decode(payload)
            except WireError as exc:
                self.counters.count_rejection(exc.code)
                log.info("refused a control message: %s", exc)
                self._reply(identity, exc.to_reply(), exc.request_id)
                return
            request_id = envelope.request_id
            message = envelope.message
            try:
                reply = self._answer(message)
            except RequestRefused as refused:
                reply = _error_reply(refused)
            self._journal_effects()  # what the reply confirms is durable before it is sent
            self._reply(identity, reply, request_id)
            if isinstance(message, Shutdown):
                self._ensure_closing()
            if isinstance(message, Submit | SubmitBatch | Cancel | Shutdown):
                self._apply_effects()
                self._pump()
        except Exception:
            self._internal_error("handling a control request")
            with contextlib.suppress(Exception):
                internal = ErrorReply(code=ErrorCode.INTERNAL, message="internal server error")
                self._reply(identity, internal, request_id)

    def _answer(self, message: Message) -> Message:
        """The reply to one decoded request (RequestRefused for an `error` reply)."""
        scheduler = self.scheduler
        if isinstance(message, Ping):
            return Pong(
                server_name=SERVER_NAME,
                pid=os.getpid(),
                uptime=scheduler.uptime(),
                protocol=PROTOCOL_VERSION,
            )
        if isinstance(message, Submit):
            return scheduler.submit(message)
        if isinstance(message, SubmitBatch):
            return SubmitBatchReply(outcomes=tuple(map(self._submit_one, message.submits)))
        if isinstance(message, StatusRequest):
            if message.execution_id is not None:
                return scheduler.status_of(message.execution_id)
            return ServerStatus(
                server_epoch=self.server_epoch,
                uptime=scheduler.uptime(),
                pid=os.getpid(),
                running=tuple(scheduler.running_entries()),
                queued=tuple(scheduler.queued_entries()),
                workers=tuple(self._worker_infos()),
                counters=scheduler.counters.to_wire(),
                handlers=tuple(self.handlers.names),
            )
        if isinstance(message, Cancel):
            return scheduler.cancel(message.execution_id, force=message.force)
        if isinstance(message, Shutdown):
            cancelled = self._begin_shutdown(message.force)
            return ShutdownReply(force=message.force, cancelled=tuple(cancelled))
        self.counters.rejected_malformed += 1
        raise RequestRefused(
            ErrorCode.INVALID_REQUEST,
            f"a {type(message).TYPE!r} message is not a request",
            "envelope.type",
        )

    def _submit_one(self, request: Submit) -> SubmitOutcome:
        """One submission of a batch, answered as a lone `submit` would be."""
        try:
            return SubmitOutcome(reply=self.scheduler.submit(request))
        except RequestRefused as refused:
            return SubmitOutcome(error=_error_reply(refused))

    def _handle_report(self, frames: list[Any]) -> None:
        try:
            self._take_report(frames)
        except Exception:
            self._internal_error("handling a worker report")

    def _take_report(self, frames: list[Any]) -> None:
        try:
            envelope = self._codec.decode(frames)
        except WireError as exc:
            self.counters.count_rejection(exc.code)
            log.info("refused a worker report: %s", exc)
            return
        message = envelope.message
        if isinstance(message, ProgressUpdate):
            execution_id = message.execution_id
            self.scheduler.progress(message)
        elif isinstance(message, WorkerStarted):
            execution_id = message.execution_id
            self.scheduler.worker_started(execution_id, message.pid, message.attempt)
            self._stats.watch(message.pid)
        elif isinstance(message, JobEnded):
            self._job_ended(message)
            return
        else:
            self.counters.rejected_malformed += 1
            log.info("refused a %r message on the progress channel", envelope.type)
            return
        waiter = self._report_waiters.get(execution_id)
        if waiter is not None:
            waiter.set()
        # Effects are carried out once the batch of reports is handled (`_pump`).

    async def _heartbeat_loop(self) -> None:
        interval = self.scheduler.heartbeat_interval
        while True:
            try:
                self.scheduler.tick()
                self._apply_effects()
                self._stats.prune()
            except Exception:
                self._internal_error("sending a heartbeat")
            await asyncio.sleep(interval)

    # -- shutdown -------------------------------------------------------------------------

    def _begin_shutdown(self, force: bool) -> list[str]:
        already_forced = self.scheduler.forced
        cancelled = self.scheduler.begin_shutdown(force=force)
        if force and not already_forced:
            self._forced.set()
            for workers in (self._pool, self._workers):
                if workers is not None:
                    workers.kill_all()
        self._apply_effects()
        return cancelled

    def _ensure_closing(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="zmqruntime-server-close")

    async def _close(self) -> None:
        """Wait for the running work to end (graceful) or be ended (forced), then close."""
        try:
            self._apply_effects()
            drained = True
            if not self.scheduler.forced:
                # Graceful: until drained, or until a forced shutdown is requested meanwhile.
                waits: set[asyncio.Task[Any]] = {
                    asyncio.create_task(self._drained.wait()),
                    asyncio.create_task(self._forced.wait()),
                }
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
            if not self._drained.is_set():
                try:
                    await asyncio.wait_for(self._drained.wait(), FORCED_GRACE_SECONDS)
                except TimeoutError:
                    log.error("forced shutdown: executions still running, abandoning them")
                    drained = False
            for workers in (self._pool, self._workers):
                if workers is not None:
                    await workers.close(kill=self.scheduler.forced, wait=drained)
        except Exception:
            self._internal_error("stopping the worker pool")
        try:
            await self._close_sockets()
        finally:
            self._close_journal()
            self._closed.set()
        log.info("execution server %s closed", self.server_epoch)

    async def _close_sockets(self) -> None:
        """Stop the readers and loops, then close the sockets: no request is
        taken after the shutdown reply; a bounded linger lets that reply and the last events
        out; the context is terminated in a thread (it waits up to that linger)."""
        if self._control is not None:
            self._control.stop()
        if self._progress is not None:
            self._progress.stop()
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        for task in [*self._loops, *self._attempt_tasks]:
            task.cancel()
        for task in [*self._loops, *self._attempt_tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._control is not None:
            self._control.close(linger=FINAL_LINGER_MS)
        if self._events is not None:
            self._events.close(linger=FINAL_LINGER_MS)
        if self._progress is not None:
            self._progress.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            await asyncio.to_thread(self._context.term)
        self._control = self._progress = self._events = None
        self._context = None


def _error_reply(refused: RequestRefused) -> ErrorReply:
    details: dict[str, Any] = {} if refused.field is None else {"field": refused.field}
    return ErrorReply(code=refused.code, message=refused.message, details=details)
