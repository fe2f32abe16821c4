"""Every message body of the wire protocol (docs/protocol.md §5–§8), as strict value types.

Each class is frozen, slotted and kw_only; `TYPE` is its envelope `type`. `from_wire(dict)` and
`to_wire()` convert to and from the JSON body; construction validates like parsing does.
Fields with a default may be absent on the wire; `to_wire()` always emits every field (null
included). The type `cancel` is a request (`Cancel`) on the control channel and a notice to
workers (`CancelNotice`) on the events channel: same body, told apart by the channel.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, TypeAlias

import attrs

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.json_types import JsonObject, JsonValue, json_eq_key
from zmqruntime.progress import ProgressUpdate
from zmqruntime.schema import (
    MaxLen,
    MinLen,
    NonEmptyStr,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SchemaError,
    WireModel,
)

__all__ = [
    "CONTROL_MESSAGE_TYPES",
    "EVENT_MESSAGE_TYPES",
    "MAX_BATCH_EVENTS",
    "MAX_BATCH_SUBMITS",
    "MAX_BATCH_UPDATES",
    "MESSAGE_TYPES",
    "Cancel",
    "CancelNotice",
    "CancelReply",
    "ErrorCode",
    "ErrorInfo",
    "ErrorReply",
    "ExecutionEvent",
    "ExecutionEvents",
    "ExecutionRecord",
    "Heartbeat",
    "JobEnded",
    "Message",
    "Ping",
    "Pong",
    "ProgressBatch",
    "QueuedExecution",
    "RunJob",
    "RunningExecution",
    "ServerCounters",
    "ServerStatus",
    "Shutdown",
    "ShutdownReply",
    "StatusReply",
    "StatusRequest",
    "Submit",
    "SubmitBatch",
    "SubmitBatchReply",
    "SubmitOutcome",
    "SubmitReply",
    "WorkerInfo",
    "WorkerReady",
    "WorkerStarted",
]


class ErrorCode(enum.StrEnum):
    """Error codes of `error` replies and of failed or cancelled execution records (§8)."""

    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNAUTHORIZED = "unauthorized"
    REPLAYED = "replayed"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    UNKNOWN_HANDLER = "unknown_handler"
    ARTIFACT_MISSING = "artifact_missing"
    BUSY = "busy"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"
    HANDLER_ERROR = "handler_error"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    SERVER_RESTARTED = "server_restarted"


# -- shared parts -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ErrorInfo(WireModel):
    """Why an execution failed or was cancelled: `{"code", "message", "traceback"}`."""

    SCHEMA_NAME: ClassVar[str] = "error_info"

    code: ErrorCode
    message: str
    traceback: str | None = None


_TERMINAL_WITH_ERROR: Final = frozenset({ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})


@attrs.frozen(kw_only=True)
class ExecutionRecord(WireModel):
    """The server's record of one execution (§6). Status, result and error go together:
    `result` only with `complete`, `error` exactly with `failed` and `cancelled`."""

    SCHEMA_NAME: ClassVar[str] = "execution_record"

    execution_id: NonEmptyStr
    handler: NonEmptyStr
    label: str | None = None
    status: ExecutionStatus
    compile_only: bool = False
    compile_artifact_id: str | None = None
    submitted_at: NonNegativeFloat
    started_at: NonNegativeFloat | None = None
    finished_at: NonNegativeFloat | None = None
    worker_pid: NonNegativeInt | None = None
    result: JsonValue = attrs.field(default=None, eq=json_eq_key)
    error: ErrorInfo | None = None

    def _check(self) -> None:
        if self.result is not None and self.status is not ExecutionStatus.COMPLETE:
            raise SchemaError(
                "result", self.result, f"only a complete execution has a result, not {self.status}"
            )
        if self.status in _TERMINAL_WITH_ERROR:
            if self.error is None:
                raise SchemaError("error", None, f"a {self.status} execution needs an error")
        elif self.error is not None:
            raise SchemaError(
                "error", self.error.to_wire(), f"a {self.status} execution has no error"
            )


# -- control: requests and replies (§5) ------------------------------------------------------


@attrs.frozen(kw_only=True)
class Ping(WireModel):
    """Request: is the server there? Body `{}`."""

    TYPE: ClassVar[str] = "ping"
    SCHEMA_NAME: ClassVar[str] = "ping"


@attrs.frozen(kw_only=True)
class Pong(WireModel):
    """Reply to `ping`."""

    TYPE: ClassVar[str] = "pong"
    SCHEMA_NAME: ClassVar[str] = "pong"

    server_name: str
    pid: NonNegativeInt
    uptime: NonNegativeFloat
    protocol: NonEmptyStr


@attrs.frozen(kw_only=True)
class Submit(WireModel):
    """Request: run a registered handler with JSON params (numpy arrays allowed inside)."""

    TYPE: ClassVar[str] = "submit"
    SCHEMA_NAME: ClassVar[str] = "submit"

    handler: NonEmptyStr
    params: JsonObject = attrs.field(eq=json_eq_key)
    compile_only: bool = False
    compile_artifact_id: NonEmptyStr | None = None
    label: str | None = None

    def _check(self) -> None:
        if self.compile_only and self.compile_artifact_id is not None:
            raise SchemaError(
                "compile_artifact_id",
                self.compile_artifact_id,
                "cannot be set together with compile_only",
            )


@attrs.frozen(kw_only=True)
class SubmitReply(WireModel):
    """Reply to `submit`: the new execution's id and its 1-based queue position (0: not waiting)."""

    TYPE: ClassVar[str] = "submit_reply"
    SCHEMA_NAME: ClassVar[str] = "submit_reply"

    execution_id: NonEmptyStr
    status: ExecutionStatus
    queue_position: NonNegativeInt


@attrs.frozen(kw_only=True)
class StatusRequest(WireModel):
    """Request: one execution's status (`status_reply`), or the server's (`server_status`)."""

    TYPE: ClassVar[str] = "status"
    SCHEMA_NAME: ClassVar[str] = "status"

    execution_id: NonEmptyStr | None = None


@attrs.frozen(kw_only=True)
class StatusReply(WireModel):
    """Reply to `status` with an id: the record, its newest progress overall and per axis, and
    the `seq` of the last event published for it (resync point after a gap)."""

    TYPE: ClassVar[str] = "status_reply"
    SCHEMA_NAME: ClassVar[str] = "status_reply"

    execution: ExecutionRecord
    latest_progress: ProgressUpdate | None = None
    axes: tuple[ProgressUpdate, ...] = ()
    seq: NonNegativeInt

    def _check(self) -> None:
        own = self.execution.execution_id
        if self.latest_progress is not None and self.latest_progress.execution_id != own:
            raise SchemaError(
                "latest_progress.execution_id",
                self.latest_progress.execution_id,
                f"must be the execution's id {own!r}",
            )
        for index, update in enumerate(self.axes):
            if update.execution_id != own:
                raise SchemaError(
                    f"axes[{index}].execution_id",
                    update.execution_id,
                    f"must be the execution's id {own!r}",
                )


@attrs.frozen(kw_only=True)
class RunningExecution(WireModel):
    """A running execution in `server_status`."""

    SCHEMA_NAME: ClassVar[str] = "running_execution"

    execution_id: NonEmptyStr
    handler: NonEmptyStr
    label: str | None = None
    compile_only: bool = False
    started_at: NonNegativeFloat
    worker_pid: NonNegativeInt | None = None


@attrs.frozen(kw_only=True)
class QueuedExecution(WireModel):
    """A queued execution in `server_status`, with its 1-based queue position."""

    SCHEMA_NAME: ClassVar[str] = "queued_execution"

    execution_id: NonEmptyStr
    handler: NonEmptyStr
    label: str | None = None
    compile_only: bool = False
    queue_position: PositiveInt


@attrs.frozen(kw_only=True)
class WorkerInfo(WireModel):
    """One worker process in `server_status` (cpu_percent may exceed 100 on several cores)."""

    SCHEMA_NAME: ClassVar[str] = "worker"

    pid: NonNegativeInt
    cpu_percent: NonNegativeFloat
    memory_mb: NonNegativeFloat
    execution_id: NonEmptyStr | None = None


@attrs.frozen(kw_only=True)
class ServerCounters(WireModel):
    """What the server refused and what it ran, since it started."""

    SCHEMA_NAME: ClassVar[str] = "counters"

    rejected_unauthorized: NonNegativeInt = 0
    rejected_replayed: NonNegativeInt = 0
    rejected_too_large: NonNegativeInt = 0
    rejected_malformed: NonNegativeInt = 0
    rejected_protocol: NonNegativeInt = 0
    submitted: NonNegativeInt = 0
    completed: NonNegativeInt = 0
    failed: NonNegativeInt = 0
    cancelled: NonNegativeInt = 0


@attrs.frozen(kw_only=True)
class ServerStatus(WireModel):
    """Reply to `status` without an id: what a server browser shows."""

    TYPE: ClassVar[str] = "server_status"
    SCHEMA_NAME: ClassVar[str] = "server_status"

    server_epoch: NonEmptyStr
    uptime: NonNegativeFloat
    pid: NonNegativeInt
    running: tuple[RunningExecution, ...] = ()
    queued: tuple[QueuedExecution, ...] = ()
    workers: tuple[WorkerInfo, ...] = ()
    counters: ServerCounters = attrs.field(factory=ServerCounters)
    handlers: tuple[NonEmptyStr, ...] = ()


@attrs.frozen(kw_only=True)
class Cancel(WireModel):
    """Request: cancel this execution only; `force` ends its worker process at once."""

    TYPE: ClassVar[str] = "cancel"
    SCHEMA_NAME: ClassVar[str] = "cancel"

    execution_id: NonEmptyStr
    force: bool = False


@attrs.frozen(kw_only=True)
class CancelReply(WireModel):
    """Reply to `cancel`: the status now, and whether this request changed it."""

    TYPE: ClassVar[str] = "cancel_reply"
    SCHEMA_NAME: ClassVar[str] = "cancel_reply"

    execution_id: NonEmptyStr
    status: ExecutionStatus
    changed: bool


@attrs.frozen(kw_only=True)
class Shutdown(WireModel):
    """Request: graceful (let running work finish) or forced shutdown of the server."""

    TYPE: ClassVar[str] = "shutdown"
    SCHEMA_NAME: ClassVar[str] = "shutdown"

    force: bool = False


@attrs.frozen(kw_only=True)
class ShutdownReply(WireModel):
    """Reply to `shutdown`, sent before the server closes: which executions it cancelled."""

    TYPE: ClassVar[str] = "shutdown_reply"
    SCHEMA_NAME: ClassVar[str] = "shutdown_reply"

    force: bool
    cancelled: tuple[NonEmptyStr, ...] = ()


@attrs.frozen(kw_only=True)
class ErrorReply(WireModel):
    """The reply to any request that failed (§8); `details.field` names a bad field."""

    TYPE: ClassVar[str] = "error"
    SCHEMA_NAME: ClassVar[str] = "error"

    code: ErrorCode
    message: str
    details: JsonObject = attrs.field(factory=dict, eq=json_eq_key)


#: Most submissions one `submit_batch` request may carry.
MAX_BATCH_SUBMITS: Final = 4096


@attrs.frozen(kw_only=True)
class SubmitBatch(WireModel):
    """Request: several submissions at once, handled as that many `submit` requests in a row
    (each accepted or refused on its own), with one reply. Arrays may be in any `params`."""

    TYPE: ClassVar[str] = "submit_batch"
    SCHEMA_NAME: ClassVar[str] = "submit_batch"

    submits: Annotated[tuple[Submit, ...], MinLen(1), MaxLen(MAX_BATCH_SUBMITS)]


@attrs.frozen(kw_only=True)
class SubmitOutcome(WireModel):
    """One submission of a batch: its `submit_reply`, or the `error` a lone `submit` would get."""

    SCHEMA_NAME: ClassVar[str] = "submit_outcome"

    reply: SubmitReply | None = None
    error: ErrorReply | None = None

    def _check(self) -> None:
        if (self.reply is None) == (self.error is None):
            raise SchemaError("error", None, "exactly one of reply and error must be set")


@attrs.frozen(kw_only=True)
class SubmitBatchReply(WireModel):
    """Reply to `submit_batch`: one outcome per submission, in the request's order."""

    TYPE: ClassVar[str] = "submit_batch_reply"
    SCHEMA_NAME: ClassVar[str] = "submit_batch_reply"

    outcomes: Annotated[tuple[SubmitOutcome, ...], MaxLen(MAX_BATCH_SUBMITS)]


# -- events (§6) and worker reports (§7) -------------------------------------------------------


@attrs.frozen(kw_only=True)
class ExecutionEvent(WireModel):
    """Event: an execution changed status; carries the whole record and the event `seq`."""

    TYPE: ClassVar[str] = "execution"
    SCHEMA_NAME: ClassVar[str] = "execution"

    record: ExecutionRecord
    seq: NonNegativeInt


#: Most `execution` events one `executions` event may carry.
MAX_BATCH_EVENTS: Final = 4096


@attrs.frozen(kw_only=True)
class ExecutionEvents(WireModel):
    """Event: several `execution` events published together (topic `__executions__`), each
    with its own execution's `seq`; the server uses it for records without result or error."""

    TYPE: ClassVar[str] = "executions"
    SCHEMA_NAME: ClassVar[str] = "executions"

    events: Annotated[tuple[ExecutionEvent, ...], MinLen(1), MaxLen(MAX_BATCH_EVENTS)]


#: Most `progress` updates one `progress_batch` event may carry.
MAX_BATCH_UPDATES: Final = 4096


@attrs.frozen(kw_only=True)
class ProgressBatch(WireModel):
    """Event: several `progress` events of one execution published together (topic: its id),
    each with its own `seq`, in rising `seq` order; the server uses it for the reports it
    handles in one go, so a fast stream costs one signed message per batch, not per update."""

    TYPE: ClassVar[str] = "progress_batch"
    SCHEMA_NAME: ClassVar[str] = "progress_batch"

    updates: Annotated[tuple[ProgressUpdate, ...], MinLen(1), MaxLen(MAX_BATCH_UPDATES)]

    def _check(self) -> None:
        first = self.updates[0]
        own, seq = first.execution_id, first.seq
        for index in range(1, len(self.updates)):
            update = self.updates[index]
            if update.execution_id != own:
                raise SchemaError(
                    f"updates[{index}].execution_id",
                    update.execution_id,
                    f"must be the first update's execution id {own!r}",
                )
            if update.seq <= seq:
                raise SchemaError(
                    f"updates[{index}].seq", update.seq, f"must be above the previous one ({seq})"
                )
            seq = update.seq


@attrs.frozen(kw_only=True)
class Heartbeat(WireModel):
    """Event on `__heartbeat__`: the server is alive; published every `interval` seconds."""

    TYPE: ClassVar[str] = "heartbeat"
    SCHEMA_NAME: ClassVar[str] = "heartbeat"

    seq: NonNegativeInt
    uptime: NonNegativeFloat
    interval: PositiveFloat


@attrs.frozen(kw_only=True)
class CancelNotice(WireModel):
    """Event on `__cancel__`: workers running this execution should stop (force: at once)."""

    TYPE: ClassVar[str] = "cancel"
    SCHEMA_NAME: ClassVar[str] = "cancel"

    execution_id: NonEmptyStr
    force: bool


@attrs.frozen(kw_only=True)
class WorkerStarted(WireModel):
    """Worker report: this process started running this execution's handler."""

    TYPE: ClassVar[str] = "worker_started"
    SCHEMA_NAME: ClassVar[str] = "worker_started"

    execution_id: NonEmptyStr
    pid: NonNegativeInt
    #: The attempt the worker was handed (absent from workers of executors that do not say).
    attempt: PositiveInt | None = None


# -- the server's own worker processes (§7) ---------------------------------------------------


@attrs.frozen(kw_only=True)
class WorkerReady(WireModel):
    """Worker to server on the jobs channel: this process is connected and takes jobs."""

    TYPE: ClassVar[str] = "worker_ready"
    SCHEMA_NAME: ClassVar[str] = "worker_ready"

    pid: NonNegativeInt


@attrs.frozen(kw_only=True)
class RunJob(WireModel):
    """Server to one worker on the jobs channel: run this attempt of an execution.

    `result_limit` is the most bytes the result may take on the wire (its JSON text plus its
    array frames) so that the `execution` event carrying it still fits in a message."""

    TYPE: ClassVar[str] = "run_job"
    SCHEMA_NAME: ClassVar[str] = "run_job"

    execution_id: NonEmptyStr
    attempt: PositiveInt
    handler: NonEmptyStr
    handler_ref: NonEmptyStr
    params: JsonObject = attrs.field(eq=json_eq_key)
    artifact: JsonValue = attrs.field(default=None, eq=json_eq_key)
    compile_only: bool = False
    result_limit: PositiveInt


_ENDINGS: Final = frozenset(
    {ExecutionStatus.COMPLETE, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)


@attrs.frozen(kw_only=True)
class JobEnded(WireModel):
    """Worker report on the progress channel, after the attempt's other reports: how the
    attempt ended. `result` only with `complete`, `error` exactly with the other two."""

    TYPE: ClassVar[str] = "job_ended"
    SCHEMA_NAME: ClassVar[str] = "job_ended"

    execution_id: NonEmptyStr
    attempt: PositiveInt
    pid: NonNegativeInt
    status: ExecutionStatus
    result: JsonValue = attrs.field(default=None, eq=json_eq_key)
    error: ErrorInfo | None = None

    def _check(self) -> None:
        if self.status not in _ENDINGS:
            raise SchemaError("status", self.status.value, "must be an end state")
        if self.result is not None and self.status is not ExecutionStatus.COMPLETE:
            raise SchemaError("result", self.result, f"a {self.status} attempt has no result")
        if (self.error is None) != (self.status is ExecutionStatus.COMPLETE):
            raise SchemaError(
                "error",
                None if self.error is None else self.error.to_wire(),
                f"a {self.status} attempt " + ("has no error" if self.error else "needs an error"),
            )


Message: TypeAlias = (
    Ping
    | Pong
    | Submit
    | SubmitReply
    | SubmitBatch
    | SubmitBatchReply
    | StatusRequest
    | StatusReply
    | ServerStatus
    | Cancel
    | CancelReply
    | Shutdown
    | ShutdownReply
    | ErrorReply
    | ExecutionEvent
    | ExecutionEvents
    | ProgressBatch
    | Heartbeat
    | CancelNotice
    | WorkerStarted
    | ProgressUpdate
    | WorkerReady
    | RunJob
    | JobEnded
)
"""Any message body that travels in an envelope."""


def _by_type(*classes: type[Any]) -> Mapping[str, type[Any]]:
    table: dict[str, type[Any]] = {}
    for cls in classes:
        if cls.TYPE in table:
            raise AssertionError(f"two message classes share the type {cls.TYPE!r}")
        table[cls.TYPE] = cls
    return table


_COMMON: Final = (
    ErrorReply,
    ExecutionEvent,
    ExecutionEvents,
    ProgressBatch,
    Heartbeat,
    WorkerStarted,
    ProgressUpdate,
    WorkerReady,
    RunJob,
    JobEnded,
)
_REQUESTS_AND_REPLIES: Final = (
    Ping,
    Pong,
    Submit,
    SubmitReply,
    SubmitBatch,
    SubmitBatchReply,
    StatusRequest,
    StatusReply,
    ServerStatus,
    CancelReply,
    Shutdown,
    ShutdownReply,
)

#: Envelope type -> body class on the control and progress channels (`cancel` is `Cancel`).
CONTROL_MESSAGE_TYPES: Final[Mapping[str, type[Any]]] = _by_type(
    *_REQUESTS_AND_REPLIES, Cancel, *_COMMON
)
#: Envelope type -> body class on the events channel (`cancel` is `CancelNotice`).
EVENT_MESSAGE_TYPES: Final[Mapping[str, type[Any]]] = _by_type(
    *_REQUESTS_AND_REPLIES, CancelNotice, *_COMMON
)
#: Envelope type -> body class (the control-channel reading of `cancel`).
MESSAGE_TYPES: Final[Mapping[str, type[Any]]] = CONTROL_MESSAGE_TYPES
