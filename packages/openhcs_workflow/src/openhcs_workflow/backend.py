"""The boundary between the workflow service and an execution server.

The service never touches sockets. It talks to a `WorkflowBackend`: submit a named handler
with JSON parameters, read one execution's status, cancel one execution, ask whether a
compile artifact is still on the server, read the server's queue, and consume the event
stream (progress and execution-record events). `ExecutionSignals` wake the service's status
pollers when an event for their execution arrives. A ZeroMQ adapter over
`zmqruntime.ExecutionClient` implements it for real servers; `openhcs_workflow.testing`
has a scripted one for tests.

Every method is called on the service's event loop, and `events()` must yield on it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias

import attrs

from zmqruntime.engines.poll_policy import StatusObservation
from zmqruntime.engines.signals import ExecutionSignals
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.progress import ProgressUpdate

__all__ = [
    "BackendEvent",
    "BackendUnavailable",
    "ExecutionNotFound",
    "ExecutionUpdate",
    "PipelineHandlers",
    "Submission",
    "SubmissionRejected",
    "WorkflowBackend",
]


class SubmissionRejected(Exception):
    """The server refused a submission; `code` is its error code (`artifact_missing`, `busy`,
    `shutting_down`, `unknown_handler`, …) and `message` its explanation."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BackendUnavailable(ConnectionError):
    """The server could not be reached or did not answer in time."""


class ExecutionNotFound(LookupError):
    """The server does not know this execution id."""


@attrs.frozen(kw_only=True)
class Submission:
    """An accepted submission: the execution id and its 1-based queue position, if known."""

    execution_id: str
    queue_position: int | None = None


@attrs.frozen(kw_only=True)
class ExecutionUpdate:
    """An execution record event: the execution's new status, with the event's `seq`."""

    execution_id: str
    status: ExecutionStatus
    seq: int
    server_epoch: str | None = None


BackendEvent: TypeAlias = ProgressUpdate | ExecutionUpdate


def _handler_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"handlers.{attribute.name}: expected a non-empty string, got {value!r}")


@attrs.frozen(kw_only=True)
class PipelineHandlers:
    """The server handler names the service submits compiles and executions to.

    The compile receives `{"plate_id": …, "pipeline": [{"name": …, "params": {…}}, …],
    "config": {…}}` and is submitted with `compile_only=True`; the execution receives
    `{"plate_id": …}` with the compile's artifact id as `compile_artifact_id` (the artifact
    holds the compiled pipeline and config, so they are not sent twice).
    """

    compile: str = attrs.field(default="compile", validator=_handler_name)
    execute: str = attrs.field(default="execute", validator=_handler_name)


class WorkflowBackend(abc.ABC):
    """What the service needs from an execution server (see the module docstring)."""

    @property
    @abc.abstractmethod
    def signals(self) -> ExecutionSignals:
        """The hub the event stream feeds (events and heartbeats); pollers wait on it."""

    @abc.abstractmethod
    async def submit(
        self,
        handler: str,
        params: Mapping[str, Any],
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        label: str | None = None,
    ) -> Submission:
        """Queue one execution. Raises `SubmissionRejected` if the server refuses it,
        `BackendUnavailable` if no server answers."""

    @abc.abstractmethod
    async def status(self, execution_id: str) -> StatusObservation:
        """The execution's status and record (`payload`: the record of docs/protocol.md §6)
        and the answering server's epoch. Raises `ExecutionNotFound` or `BackendUnavailable`."""

    @abc.abstractmethod
    async def cancel(self, execution_id: str, *, force: bool = False) -> None:
        """Cancel that execution only (force: end its worker now). Already terminal: no-op."""

    @abc.abstractmethod
    async def artifact_available(self, artifact_id: str) -> bool:
        """True if the compile artifact can still be used by an execution."""

    @abc.abstractmethod
    async def queue_positions(self) -> Mapping[str, int]:
        """Execution id → 1-based queue position, for every queued execution on the server."""

    async def aclose(self) -> None:
        """Release the backend's resources (sockets); the default has none."""
        return None

    @abc.abstractmethod
    def events(self) -> AsyncIterator[BackendEvent]:
        """The server's progress and execution events, as they arrive, for every execution.

        Called once by the service; the iterator ends when the backend closes. A backend that
        recovers lost events (a status snapshot after a `seq` gap) yields them again as events:
        the service ignores duplicates.
        """
