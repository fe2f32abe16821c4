"""The host contract: what a plate-manager GUI (or a console, or a notebook) must provide.

A host subclasses `Host` (nominally: a class that merely has these methods is refused). The
service calls every method below through `host.dispatcher`, so a Qt host receives them on its
GUI thread and a notebook host on its event loop, never on a worker thread. The host reads
plate states, compiled artifacts, execution ids and progress from the service's read-only
`WorkflowView` (`service.view`); it never writes them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from openhcs_workflow.plate_state import PlateState
from reactive_services.dispatch import Dispatcher

__all__ = ["Host"]


class Host(abc.ABC):
    """Callbacks of one plate manager. Each runs on the host's `dispatcher`, in call order."""

    @property
    @abc.abstractmethod
    def dispatcher(self) -> Dispatcher:
        """Where every callback of this host runs (e.g. `QtDispatcher`, `AsyncioDispatcher`)."""

    @abc.abstractmethod
    def emit_status(self, msg: str) -> None:
        """Show a one-line status message (the status bar)."""

    @abc.abstractmethod
    def emit_error(self, msg: str) -> None:
        """Show an error message (one per problem, never one per plate of a batch)."""

    @abc.abstractmethod
    def emit_progress_started(self, total: int) -> None:
        """A batch of `total` plates started."""

    @abc.abstractmethod
    def emit_progress_updated(self, done: int) -> None:
        """`done` plates of the current batch have finished."""

    @abc.abstractmethod
    def emit_progress_finished(self) -> None:
        """The batch is over."""

    @abc.abstractmethod
    def update_item_list(self) -> None:
        """Plate rows changed: re-read labels from `service.view`."""

    @abc.abstractmethod
    def update_button_states(self) -> None:
        """Busy/idle changed: re-read `service.view.busy` and friends."""

    @abc.abstractmethod
    def emit_orchestrator_state(self, plate_id: str, state: PlateState) -> None:
        """`plate_id` entered `state`."""

    @abc.abstractmethod
    def emit_execution_complete(self, result: Mapping[str, Any], plate_id: str) -> None:
        """`plate_id`'s execution ended; `result` holds status, execution id, result or error."""

    @abc.abstractmethod
    def on_plate_completed(
        self, plate_id: str, status: PlateState, result: Mapping[str, Any]
    ) -> None:
        """`plate_id` reached its terminal `status` (completed, failed, cancelled): once per run."""

    @abc.abstractmethod
    def on_all_plates_completed(self, completed: int, failed: int, cancelled: int) -> None:
        """Every plate of a run batch is terminal: once per batch, counts adding up."""
