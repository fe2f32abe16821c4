"""`ZmqWorkflowBackend`: the workflow service's backend over a real execution server.

A thin adapter from `WorkflowBackend` to `zmqruntime.ExecutionClient`: it translates the
client's errors into the backend's (`SubmissionRejected`, `ExecutionNotFound`,
`BackendUnavailable`) and its events into `BackendEvent`s. A `Resynced` snapshot (after a lost
event, or joining late) is replayed as the latest progress of every well plus the record's
status; the service ignores what it has already seen.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

from openhcs_workflow.backend import (
    BackendEvent,
    BackendUnavailable,
    ExecutionNotFound,
    ExecutionUpdate,
    Submission,
    SubmissionRejected,
    WorkflowBackend,
)
from zmqruntime.client import ExecutionClient, Resynced, ServerError, ServerUnavailable
from zmqruntime.connection import ConnectionInfo
from zmqruntime.engines import ExecutionSignals, StatusObservation
from zmqruntime.messages import ExecutionEvent, StatusReply
from zmqruntime.progress import ProgressUpdate

__all__ = ["ZmqWorkflowBackend"]


class ZmqWorkflowBackend(WorkflowBackend):
    """The service's backend over one `ExecutionClient` (which it closes on `aclose`)."""

    def __init__(self, client: ExecutionClient) -> None:
        self.client = client

    @classmethod
    async def connect(
        cls, source: ConnectionInfo | str | os.PathLike[str], **client_options: Any
    ) -> Self:
        """Connect to the server of a `ConnectionInfo` or a connection file."""
        return cls(await ExecutionClient.connect(source, **client_options))

    @property
    def signals(self) -> ExecutionSignals:
        return self.client.signals

    async def submit(
        self,
        handler: str,
        params: Mapping[str, Any],
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        label: str | None = None,
    ) -> Submission:
        try:
            reply = await self.client.submit(
                handler,
                params,
                compile_only=compile_only,
                compile_artifact_id=compile_artifact_id,
                label=label,
            )
        except ServerError as exc:
            raise SubmissionRejected(exc.code, exc.message) from exc
        except ServerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc
        return Submission(execution_id=reply.execution_id, queue_position=reply.queue_position)

    async def status(self, execution_id: str) -> StatusObservation:
        try:
            return await self.client.observe(execution_id)
        except ServerError as exc:
            raise _lookup_error(execution_id, exc) from exc
        except ServerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def cancel(self, execution_id: str, *, force: bool = False) -> None:
        try:
            await self.client.cancel(execution_id, force=force)
        except ServerError as exc:
            if exc.code != "not_found":  # an execution the server forgot is not running
                raise BackendUnavailable(f"cancel of {execution_id} refused: {exc}") from exc
        except ServerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def artifact_available(self, artifact_id: str) -> bool:
        try:
            record = (await self._status(artifact_id)).execution
        except ExecutionNotFound:
            return False
        # An artifact that expires after this answer is refused at submission with
        # `artifact_missing`, which the service treats as "compile again".
        return record.compile_only and record.status == "complete"

    async def queue_positions(self) -> Mapping[str, int]:
        try:
            overview = await self.client.status()
        except ServerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc
        return {entry.execution_id: entry.queue_position for entry in overview.queued}

    async def events(self) -> AsyncIterator[BackendEvent]:
        epoch = self.client.server_epoch
        async for event in self.client.events():
            epoch = self.client.server_epoch or epoch
            if isinstance(event, ExecutionEvent):
                yield _update(event.record.execution_id, event, epoch)
            elif isinstance(event, Resynced):
                for replayed in _replay(event.snapshot, epoch):
                    yield replayed
            elif isinstance(event, ProgressUpdate):
                yield event
            # Heartbeats feed `signals` inside the client; the service needs nothing else.

    async def aclose(self) -> None:
        await self.client.close()

    async def _status(self, execution_id: str) -> StatusReply:
        try:
            return await self.client.status(execution_id)
        except ServerError as exc:
            raise _lookup_error(execution_id, exc) from exc
        except ServerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc


def _lookup_error(execution_id: str, exc: ServerError) -> Exception:
    if exc.code == "not_found":
        return ExecutionNotFound(execution_id)
    return BackendUnavailable(f"status of {execution_id} refused: {exc}")


def _update(execution_id: str, event: ExecutionEvent, epoch: str | None) -> ExecutionUpdate:
    return ExecutionUpdate(
        execution_id=execution_id, status=event.record.status, seq=event.seq, server_epoch=epoch
    )


def _replay(snapshot: StatusReply, epoch: str | None) -> list[BackendEvent]:
    events: list[BackendEvent] = list(snapshot.axes)
    record = snapshot.execution
    events.append(
        ExecutionUpdate(
            execution_id=record.execution_id,
            status=record.status,
            seq=snapshot.seq,
            server_epoch=epoch,
        )
    )
    return events
