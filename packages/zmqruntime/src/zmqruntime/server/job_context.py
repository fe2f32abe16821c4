"""What a handler sees while it runs in a worker: its parameters, progress reporting, cancellation.

A handler is `def handler(ctx: JobContext) -> JSON`. It reads `ctx.params` (and `ctx.artifact`
when the request named a compile artifact), reports progress with `ctx.progress(...)` or
`ctx.report(update)`, and checks `ctx.cancelled()` or calls `ctx.raise_if_cancelled()` between
steps. Cancellation is cooperative: a handler that never checks runs to its end (a forced
cancel ends its worker process instead). Reports are best-effort and never block the handler
for long: a server that does not read them makes them drop, not stall.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate

__all__ = ["ExecutionCancelled", "JobContext", "ReportChannel"]


class ExecutionCancelled(Exception):
    """Raised by `JobContext.raise_if_cancelled()` once the execution was cancelled."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id} was cancelled")
        self.execution_id = execution_id


class ReportChannel(Protocol):
    """Where a job context sends reports and learns about cancellation (the worker's sockets)."""

    def send_progress(self, update: ProgressUpdate) -> bool:
        """Queue a progress report; False if it had to be dropped."""
        ...

    def is_cancelled(self, execution_id: str) -> bool:
        """Whether a cancellation notice for this execution has arrived (non-blocking)."""
        ...


class JobContext:
    """The handler's view of one execution, created by the worker runtime for each job."""

    __slots__ = (
        "_channel",
        "_seq",
        "artifact",
        "compile_only",
        "execution_id",
        "handler",
        "params",
        "reports_sent",
    )

    def __init__(
        self,
        *,
        execution_id: str,
        handler: str,
        params: Mapping[str, Any],
        artifact: Any,
        compile_only: bool,
        channel: ReportChannel,
    ) -> None:
        self.execution_id = execution_id
        self.handler = handler
        self.params: Mapping[str, Any] = params
        self.artifact: Any = artifact
        self.compile_only = compile_only
        self._channel = channel
        self._seq = 0
        #: Progress reports handed to the transport (the server waits for these before it
        #: publishes the final state, so no progress arrives after `complete`).
        self.reports_sent = 0

    def report(self, update: ProgressUpdate) -> None:
        """Send one progress update for this execution (its `seq` is re-stamped by the server)."""
        if update.execution_id != self.execution_id:
            raise ValueError(
                f"progress.execution_id: {update.execution_id!r} is not this execution "
                f"({self.execution_id!r})"
            )
        if self._channel.send_progress(update):
            self.reports_sent += 1

    def progress(
        self,
        *,
        plate_id: str,
        axis_id: str,
        step_name: str,
        step_index: int,
        total_steps: int,
        phase: Phase | str,
        status: ProgressStatus | str,
        completed: int,
        total: int,
        percent: float | None = None,
        message: str | None = None,
        pattern: str | None = None,
        component: str | None = None,
    ) -> ProgressUpdate:
        """Build, validate and send a progress update; returns it.

        `percent` defaults to `completed / total` (0 when `total` is 0); the execution id,
        timestamp and worker-side `seq` are filled in. Invalid values raise `SchemaError`.
        """
        if percent is None:
            # Clamped, so that `completed > total` is reported as such by the schema.
            percent = min(100.0, 100.0 * completed / total) if total > 0 else 0.0
        self._seq += 1
        update = ProgressUpdate(
            execution_id=self.execution_id,
            plate_id=plate_id,
            axis_id=axis_id,
            step_name=step_name,
            step_index=step_index,
            total_steps=total_steps,
            phase=Phase(phase),
            status=ProgressStatus(status),
            completed=completed,
            total=total,
            percent=percent,
            timestamp=time.time(),
            seq=self._seq,
            message=message,
            pattern=pattern,
            component=component,
        )
        self.report(update)
        return update

    def cancelled(self) -> bool:
        """True once this execution was cancelled (checks for notices without blocking)."""
        return self._channel.is_cancelled(self.execution_id)

    def raise_if_cancelled(self) -> None:
        """Raise `ExecutionCancelled` if this execution was cancelled."""
        if self.cancelled():
            raise ExecutionCancelled(self.execution_id)
