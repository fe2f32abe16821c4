"""`BatchDisplayHost`: the part of a host that every display shares.

It turns the `Host` callbacks into a few rendering hooks: a batch of plates started, its rows
changed, a status line or an error arrived, a plate finished, the batch finished. It learns the
batch's plates from the callbacks themselves (each plate enters `queued` or `compile_pending`
right before `emit_progress_started`), reads rows from the service's `WorkflowView` (attach it
with `attach(service.view)`), and never writes anything back: the service is the single
writer of plate state. It shows one batch at a time (the latest one started).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from openhcs_workflow.host import Host
from openhcs_workflow.hosts.rows import BatchProgress, batch_progress
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.workflow_state import WorkflowView
from reactive_services.dispatch import AsyncioDispatcher, Dispatcher, ImmediateDispatcher

__all__ = ["BatchDisplayHost", "default_dispatcher"]

#: The states a plate enters when a batch admits it.
_ADMITTED = frozenset({PlateState.QUEUED, PlateState.COMPILE_PENDING})


def default_dispatcher() -> Dispatcher:
    """The running event loop's `AsyncioDispatcher`, or `ImmediateDispatcher` without a loop."""
    try:
        return AsyncioDispatcher(asyncio.get_running_loop())
    except RuntimeError:
        return ImmediateDispatcher()


class BatchDisplayHost(Host):
    """A `Host` showing the current batch: override the `show_*` hooks to draw it.

    Every callback runs on `dispatcher` (default: `default_dispatcher()`), and so does every
    hook. What it saw is readable afterwards: `plate_ids` (the current batch), `status` (the
    latest status line), `errors`, `results` (plate → its `on_plate_completed` result) and
    `totals` (completed, failed, cancelled of the last finished run batch).
    """

    def __init__(self, dispatcher: Dispatcher | None = None) -> None:
        self._dispatcher = dispatcher if dispatcher is not None else default_dispatcher()
        self._view: WorkflowView | None = None
        self._admitted: list[str] = []
        self.plate_ids: tuple[str, ...] = ()
        self.status = ""
        self.errors: list[str] = []
        self.results: dict[str, Mapping[str, Any]] = {}
        self.totals: tuple[int, int, int] | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    def attach(self, view: WorkflowView) -> None:
        """Read plate rows from `view` (the service's `view`); call before the first batch."""
        self._view = view

    @property
    def view(self) -> WorkflowView:
        if self._view is None:
            raise RuntimeError(
                f"{type(self).__name__} has no view to read plates from: call "
                "host.attach(service.view) after creating the service"
            )
        return self._view

    def progress(self) -> BatchProgress:
        """The current batch's rows, read now from the view."""
        return batch_progress(self.view, self.plate_ids)

    # -- rendering hooks (override) --------------------------------------------------------

    def show_batch_started(self, progress: BatchProgress) -> None:
        """A batch of these plates started (the previous one, if any, is over)."""

    def show_progress(self, progress: BatchProgress) -> None:
        """Rows or the overall progress changed."""

    def show_status(self, text: str) -> None:
        """A new status line."""

    def show_error(self, text: str) -> None:
        """An error message (one per problem)."""

    def show_plate_state(self, plate_id: str, state: PlateState) -> None:
        """`plate_id` entered `state` (rows are redrawn separately through `show_progress`)."""

    def show_plate_finished(
        self, plate_id: str, state: PlateState, result: Mapping[str, Any]
    ) -> None:
        """A plate of the current run reached its terminal state."""

    def show_batch_finished(self, progress: BatchProgress) -> None:
        """The batch is over: every plate is terminal."""

    def show_busy(self, busy: bool) -> None:
        """Whether a batch runs (enable or disable buttons)."""

    # -- Host callbacks ---------------------------------------------------------------------

    def emit_status(self, msg: str) -> None:
        self.status = msg
        self.show_status(msg)

    def emit_error(self, msg: str) -> None:
        self.errors.append(msg)
        self.show_error(msg)

    def emit_progress_started(self, total: int) -> None:
        self.plate_ids = tuple(self._admitted[-total:]) if total > 0 else ()
        self._admitted.clear()
        self.results = {}
        self.show_batch_started(self.progress())

    def emit_progress_updated(self, done: int) -> None:
        self.show_progress(self.progress())

    def emit_progress_finished(self) -> None:
        self.show_batch_finished(self.progress())

    def update_item_list(self) -> None:
        if self.plate_ids:
            self.show_progress(self.progress())

    def update_button_states(self) -> None:
        self.show_busy(self.view.busy)

    def emit_orchestrator_state(self, plate_id: str, state: PlateState) -> None:
        if state in _ADMITTED:
            self._admitted.append(plate_id)
        self.show_plate_state(plate_id, state)

    def emit_execution_complete(self, result: Mapping[str, Any], plate_id: str) -> None:
        """Nothing to show: `on_plate_completed` follows with the same result."""

    def on_plate_completed(
        self, plate_id: str, status: PlateState, result: Mapping[str, Any]
    ) -> None:
        self.results[plate_id] = result
        self.show_plate_finished(plate_id, status, result)

    def on_all_plates_completed(self, completed: int, failed: int, cancelled: int) -> None:
        self.totals = (completed, failed, cancelled)
