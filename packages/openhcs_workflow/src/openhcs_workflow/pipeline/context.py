"""What the pipeline needs from whoever runs it: progress reporting and cancellation.

`ProgressSink` and `HandlerContext` are structural (Protocols): the execution server's
`zmqruntime.server.JobContext` satisfies them without this package importing server internals,
and `LocalContext` satisfies them for running a plate in-process (a script, a test, a
notebook without a server).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

__all__ = ["HandlerContext", "LocalContext", "PlateRunCancelled", "ProgressEvent", "ProgressSink"]


class ProgressSink(Protocol):
    """Receives progress and answers whether the run was cancelled."""

    def progress(
        self,
        *,
        plate_id: str,
        axis_id: str,
        step_name: str,
        step_index: int,
        total_steps: int,
        phase: str,
        status: str,
        completed: int,
        total: int,
        percent: float | None = None,
        message: str | None = None,
        pattern: str | None = None,
        component: str | None = None,
    ) -> object:
        """Report one progress event (the fields of the protocol's `ProgressUpdate`)."""
        ...

    def cancelled(self) -> bool:
        """True once the run was cancelled."""
        ...

    def raise_if_cancelled(self) -> None:
        """Raise the runner's cancellation exception if the run was cancelled."""
        ...


class HandlerContext(ProgressSink, Protocol):
    """What a server handler reads besides progress: its execution, params and artifact."""

    @property
    def execution_id(self) -> str:
        """The execution this handler call runs."""
        ...

    @property
    def params(self) -> Mapping[str, Any]:
        """The JSON parameters of the request."""
        ...

    @property
    def artifact(self) -> Any:
        """The compile artifact's JSON (the `compile` handler's result), or None."""
        ...


@attrs.frozen(slots=True, kw_only=True)
class ProgressEvent:
    """One progress report, as `LocalContext` hands it to its callback."""

    plate_id: str
    axis_id: str
    step_name: str
    step_index: int
    total_steps: int
    phase: str
    status: str
    completed: int
    total: int
    percent: float | None = None
    message: str | None = None
    pattern: str | None = None
    component: str | None = None


class PlateRunCancelled(Exception):
    """Raised by `LocalContext.raise_if_cancelled` once its cancel event is set."""


class LocalContext:
    """A `HandlerContext` for in-process runs: progress to a callback, cancel via an event.

    Use it to run a plate without a server, or to call a handler directly (pass its `params`
    and `artifact`). The event may be set from another thread (a GUI's Stop button); the run
    stops at its next check, between steps.
    """

    def __init__(
        self,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        artifact: Any = None,
        execution_id: str = "local",
    ) -> None:
        self._on_progress = on_progress
        self._cancel = cancel if cancel is not None else threading.Event()
        self.params: Mapping[str, Any] = {} if params is None else params
        self.artifact: Any = artifact
        self.execution_id = execution_id

    def progress(
        self,
        *,
        plate_id: str,
        axis_id: str,
        step_name: str,
        step_index: int,
        total_steps: int,
        phase: str,
        status: str,
        completed: int,
        total: int,
        percent: float | None = None,
        message: str | None = None,
        pattern: str | None = None,
        component: str | None = None,
    ) -> ProgressEvent:
        """Build the event and pass it to the callback, if any."""
        event = ProgressEvent(
            plate_id=plate_id,
            axis_id=axis_id,
            step_name=step_name,
            step_index=step_index,
            total_steps=total_steps,
            phase=phase,
            status=status,
            completed=completed,
            total=total,
            percent=percent,
            message=message,
            pattern=pattern,
            component=component,
        )
        if self._on_progress is not None:
            self._on_progress(event)
        return event

    def cancel(self) -> None:
        """Ask the run to stop at its next check."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """True once `cancel()` was called or the event was set."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `PlateRunCancelled` if cancelled."""
        if self._cancel.is_set():
            raise PlateRunCancelled("the plate run was cancelled")
