"""The worker side of an execution: runs one handler in whatever process the executor chose.

`run_job` is the function every executor runs. Its only argument is a `JobSpec` of plain values
(ids, the handler's importable reference, JSON params, the compile artifact's JSON value,
endpoint strings, the hex key and, with CurveZMQ, the Z85 keys the worker connects with), and
it returns a `JobOutcome` of plain values; so any `concurrent.futures.Executor` can carry it,
and nothing about the server (no socket, no lock, no event loop) is inherited by a worker.

Each worker thread keeps, per server, one PUSH socket to the progress channel and one SUB socket
on the `__cancel__` topic of the events channel; both are created at the first job and reused.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections import OrderedDict
from typing import Any, Literal, TypedDict

import zmq

from zmqruntime.arrays import extract_arrays
from zmqruntime.codec import WireCodec, WireError, send_frames
from zmqruntime.curve import CurveKeyPair, apply_curve_client
from zmqruntime.json_types import check_json_value
from zmqruntime.messages import CancelNotice, ErrorCode, ErrorInfo, JobEnded, WorkerStarted
from zmqruntime.progress import ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.server.handlers import HandlerSpecError, resolve_reference
from zmqruntime.server.job_context import ExecutionCancelled, JobContext
from zmqruntime.signing import frame_length

__all__ = [
    "JobOutcome",
    "JobSpec",
    "WorkerChannels",
    "WorkerCurve",
    "cancelled_outcome",
    "failed_outcome",
    "result_size",
    "run_attempt",
    "run_job",
    "wire_size",
    "within_result_limit",
    "worker_initializer",
]

log = logging.getLogger(__name__)

#: Topic of cancellation notices on the events channel.
CANCEL_TOPIC = "__cancel__"
#: How long one report may wait for room in a full send queue before it is dropped.
_SEND_WAIT_MS = 1000
#: Cancellation notices remembered per worker thread.
_REMEMBERED_CANCELS = 4096


class WorkerCurve(TypedDict):
    """CURVE keys (Z85 text) a worker connects with: the server's public key and the worker
    key pair the server admits."""

    server_public: str
    public: str
    secret: str


class JobSpec(TypedDict):
    """Everything a worker needs to run one execution; plain values only."""

    execution_id: str
    attempt: int
    handler: str
    handler_ref: str
    params: dict[str, Any]
    artifact: Any
    compile_only: bool
    progress_endpoint: str
    events_endpoint: str
    key: str
    curve: WorkerCurve | None


class JobOutcome(TypedDict):
    """How a job ended, as plain values: `kind` with its result or error (a wire ErrorInfo),
    and how many reports (worker_started + progress) the worker queued for the server."""

    kind: Literal["complete", "failed", "cancelled"]
    result: Any
    error: dict[str, Any] | None
    reports: int


class WorkerChannels:
    """One worker thread's sockets to one server: progress out, cancellation notices in."""

    def __init__(
        self,
        progress_endpoint: str,
        events_endpoint: str,
        key: bytes,
        curve: WorkerCurve | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        max_message_size: int = 64 * 2**20,
    ) -> None:
        self._context = context if context is not None else zmq.Context()
        self._codec = WireCodec(key, max_message_size=max_message_size)
        self._push = self._context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 1000)
        self._push.setsockopt(zmq.SNDHWM, 10_000)
        self._sub = self._context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, CANCEL_TOPIC.encode())
        if curve is not None:
            pair = CurveKeyPair(public=curve["public"].encode(), secret=curve["secret"].encode())
            for sock in (self._push, self._sub):
                apply_curve_client(sock, curve["server_public"].encode(), pair)
        self._push.connect(progress_endpoint)
        self._sub.connect(events_endpoint)
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._congested = False

    def send(self, message: WorkerStarted | ProgressUpdate) -> bool:
        """Queue a report without blocking for long; False when it had to be dropped.

        A full queue (server gone or overloaded) is waited on once for up to a second; while
        it stays full, further reports are dropped at once so the handler is never held up.
        """
        frames = self._codec.encode(message)
        try:
            send_frames(self._push, frames)
        except zmq.Again:
            if self._congested or not self._push.poll(_SEND_WAIT_MS, zmq.POLLOUT):
                self._congested = True
                return False
            try:
                send_frames(self._push, frames)
            except zmq.Again:
                self._congested = True
                return False
        self._congested = False
        return True

    def send_end(self, message: JobEnded) -> None:
        """Queue how an attempt ended, waiting for room as long as it takes: the server must
        learn every end (a worker whose server died is ended by the kernel, see
        `worker_initializer`)."""
        frames = self._codec.encode(message)
        send_frames(self._push, frames, block=True)

    def send_progress(self, update: ProgressUpdate) -> bool:
        """`ReportChannel` method: queue one progress report."""
        return self.send(update)

    def _pending_notice(self) -> bool:
        events = self._sub.getsockopt(zmq.EVENTS)
        assert isinstance(events, int)
        return bool(events & zmq.POLLIN)

    def is_cancelled(self, execution_id: str) -> bool:
        """`ReportChannel` method: read pending notices (non-blocking), then look this id up."""
        # Before every job and at every check of a handler: asking EVENTS costs half a
        # receive that raises `zmq.Again`.
        while self._pending_notice():
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                envelope = self._codec.decode(frames, topic=True)
            except WireError as exc:
                log.warning("ignored an invalid cancellation notice: %s", exc)
                continue
            notice = envelope.message
            if isinstance(notice, CancelNotice):
                self._cancelled[notice.execution_id] = None
                self._cancelled.move_to_end(notice.execution_id)
                while len(self._cancelled) > _REMEMBERED_CANCELS:
                    self._cancelled.popitem(last=False)
        return execution_id in self._cancelled


_local = threading.local()


def _channels_for(job: JobSpec) -> WorkerChannels:
    """This thread's channels to the job's server, created at first use and then reused."""
    curve = job["curve"]
    key = (
        job["progress_endpoint"],
        job["events_endpoint"],
        job["key"],
        None if curve is None else curve["public"],
    )
    cache: dict[tuple[str, str, str, str | None], WorkerChannels] | None = getattr(
        _local, "channels", None
    )
    if cache is None:
        cache = _local.channels = {}
    channels = cache.get(key)
    if channels is None:
        channels = cache[key] = WorkerChannels(
            job["progress_endpoint"], job["events_endpoint"], bytes.fromhex(job["key"]), curve
        )
    return channels


def result_size(result: Any) -> int:
    """Bytes a result takes on the wire: its JSON text plus its array frames (0 for a value
    that is not JSON at all; validation reports that one)."""
    try:
        value, _, frames = extract_arrays(result)
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # SchemaError is a ValueError
        return 0
    return len(text.encode()) + sum(frame_length(frame) for frame in frames)


def failed_outcome(
    code: ErrorCode, message: str, tb: str | None = None, reports: int = 0
) -> JobOutcome:
    """The outcome of a job that failed with this error."""
    error = ErrorInfo(code=code, message=message, traceback=tb).to_wire()
    return {"kind": "failed", "result": None, "error": error, "reports": reports}


def cancelled_outcome(execution_id: str, reports: int = 0) -> JobOutcome:
    """The outcome of an attempt that stopped (or never started) because it was cancelled."""
    error = ErrorInfo(
        code=ErrorCode.CANCELLED, message=f"execution {execution_id} stopped after cancellation"
    ).to_wire()
    return {"kind": "cancelled", "result": None, "error": error, "reports": reports}


def run_job(job: JobSpec) -> JobOutcome:
    """Run one execution's handler here and return how it ended (never raises for the handler).

    The function an executor runs: it reaches the server through this thread's channels
    (created at the first job, then reused). See `run_attempt`.
    """
    return run_attempt(
        _channels_for(job),
        execution_id=job["execution_id"],
        attempt=job["attempt"],
        handler=job["handler"],
        handler_ref=job["handler_ref"],
        params=job["params"],
        artifact=job["artifact"],
        compile_only=job["compile_only"],
    )


def run_attempt(
    channels: WorkerChannels,
    *,
    execution_id: str,
    attempt: int,
    handler: str,
    handler_ref: str,
    params: dict[str, Any],
    artifact: Any,
    compile_only: bool,
    announce: bool = True,
) -> JobOutcome:
    """Run one attempt's handler in this process and return how it ended (never raises for
    the handler).

    With `announce`, sends `worker_started` first (so the server knows this process runs it;
    the server's own workers need not, it knows). Skips the handler if the execution was
    already cancelled, and checks that the result is JSON (numpy arrays allowed) so a bad
    return value fails the execution with a clear message.
    """
    reports = 0
    if announce:
        started = WorkerStarted(execution_id=execution_id, pid=os.getpid(), attempt=attempt)
        reports = int(channels.send(started))
    if channels.is_cancelled(execution_id):
        return cancelled_outcome(execution_id, reports)
    context = JobContext(
        execution_id=execution_id,
        handler=handler,
        params=params,
        artifact=artifact,
        compile_only=compile_only,
        channel=channels,
    )
    try:
        function = resolve_reference(handler_ref)
    except HandlerSpecError as exc:
        return failed_outcome(ErrorCode.HANDLER_ERROR, f"cannot load handler: {exc}", None, reports)
    try:
        result = function(context)
    except ExecutionCancelled:
        return cancelled_outcome(execution_id, reports + context.reports_sent)
    except (Exception, SystemExit) as exc:
        return failed_outcome(
            ErrorCode.HANDLER_ERROR,
            f"handler {handler!r} raised {type(exc).__name__}: {exc}",
            traceback.format_exc(),
            reports + context.reports_sent,
        )
    reports += context.reports_sent
    try:
        check_json_value(result)
    except SchemaError as exc:
        exc.prefixed("result")
        return failed_outcome(
            ErrorCode.HANDLER_ERROR,
            f"handler {handler!r} returned a value that is not JSON: {exc}",
            None,
            reports,
        )
    return {"kind": "complete", "result": result, "error": None, "reports": reports}


def within_result_limit(outcome: JobOutcome, limit: int) -> JobOutcome:
    """The outcome, made to fit in an `execution` event: a result of more than `limit` bytes
    on the wire fails the attempt saying so, and an error's message and traceback are cut
    to `limit` bytes together. Either could otherwise never leave the server."""
    if outcome["kind"] != "complete":
        return _error_cut_to(outcome, limit)
    size = result_size(outcome["result"])
    if size <= limit:
        return outcome
    return failed_outcome(
        ErrorCode.HANDLER_ERROR,
        f"the handler's result has {size} bytes; at most {limit} fit in a message "
        "(the server's max_message_size, less room for the rest of the record)",
        reports=outcome["reports"],
    )


def wire_size(text: str) -> int:
    """Bytes `text` takes as a JSON string on the wire (non-ASCII is written escaped)."""
    return len(json.dumps(text))


def _error_cut_to(outcome: JobOutcome, limit: int) -> JobOutcome:
    error = outcome["error"]
    if error is None:
        return outcome
    message, tb = str(error.get("message", "")), error.get("traceback")
    fields = [message] if tb is None else [message, str(tb)]
    if sum(wire_size(field) for field in fields) <= limit:
        return outcome
    share = max(64, limit // len(fields))
    cut = [_cut(field, share) for field in fields]
    return {**outcome, "error": {**error, "message": cut[0], "traceback": tb and cut[-1]}}


def _cut(text: str, limit: int) -> str:
    """`text`, shortened (keeping its start and end) to at most `limit` bytes as JSON."""
    if wire_size(text) <= limit:
        return text
    keep = max(0, limit - 64) // 12  # a character takes at most 12 bytes escaped
    head, tail = text[: keep // 2], text[len(text) - keep // 2 :] if keep > 1 else ""
    return f"{head} [… {len(text) - len(head) - len(tail)} characters cut …] {tail}"


_PR_SET_PDEATHSIG = 1


def worker_initializer(server_pid: int) -> None:
    """Set up a pool worker process: die with the server, leave Ctrl-C to the server.

    On Linux the kernel kills the worker when the server process dies (even by SIGKILL), so a
    crashed server leaves no orphans. SIGINT is ignored: a terminal's Ctrl-C reaches the whole
    process group, and the server turns it into a graceful shutdown that lets jobs finish.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # born blocked (see worker_pool); now ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server_pid:  # the server died before prctl took effect
        os._exit(1)
