"""The service's plate data: one writer (the service's loop), many lock-free readers.

`WorkflowState` holds every plate's `PlateRecord` in a `VersionedStore`, plus what is needed to
route progress events to plates: which execution is each plate's current one, and the
progress accumulator of that execution. `WorkflowView` is the read-only face hosts get.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from openhcs_workflow.plate_record import CompiledPlate, PlateRecord
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.progress_projection import (
    PlateProgress,
    PlateProgressAccumulator,
    ProgressEvent,
)
from openhcs_workflow.status_presenter import ExecutionServerStatusPresenter, StatusSummary
from reactive_services.versioned_store import StoreSnapshot, VersionedStore

__all__ = ["Activity", "WorkflowState", "WorkflowView"]


@attrs.frozen(kw_only=True)
class Activity:
    """Batch-level state the host's buttons depend on."""

    busy_plates: frozenset[str] = frozenset()
    stopping: bool = False
    batches: int = 0

    @property
    def busy(self) -> bool:
        """True while any batch of the service runs."""
        return self.batches > 0


class WorkflowState:
    """Plate records and progress routing. Call the mutating methods from one thread only."""

    def __init__(self) -> None:
        self.store: VersionedStore[str, PlateRecord] = VersionedStore()
        self.activity = Activity()
        self._routes: dict[str, str] = {}  # execution id -> plate id
        self._accumulators: dict[str, PlateProgressAccumulator] = {}  # plate id -> its projection

    # -- records ----------------------------------------------------------------------------

    def record(self, plate_id: str) -> PlateRecord:
        """The plate's record (a fresh `created` record for a plate never seen)."""
        current = self.store.get(plate_id)
        return current if current is not None else PlateRecord(plate_id=plate_id)

    def update(self, plate_id: str, **changes: Any) -> PlateRecord:
        """Replace fields of the plate's record; returns the new record."""
        new = attrs.evolve(self.record(plate_id), **changes)
        self.store.set(plate_id, new, create=True)
        return new

    def summary(self) -> StatusSummary:
        """The status-line summary over every plate."""
        return StatusSummary.of(
            (r.state, r.progress.percent if r.progress is not None else 0.0)
            for r in self.store.snapshot().values()
        )

    # -- executions and progress ------------------------------------------------------------

    def bind_execution(self, plate_id: str, execution_id: str) -> None:
        """Make `execution_id` the plate's current execution, with an empty projection."""
        self.unbind(plate_id)
        self._routes[execution_id] = plate_id
        self._accumulators[plate_id] = PlateProgressAccumulator(plate_id, execution_id)

    def unbind(self, plate_id: str) -> None:
        """Stop routing events of the plate's execution to it (its projection stays shown)."""
        accumulator = self._accumulators.pop(plate_id, None)
        if accumulator is not None:
            self._routes.pop(accumulator.execution_id, None)

    def plate_of(self, execution_id: str) -> str | None:
        """The plate whose current execution this is, or None."""
        return self._routes.get(execution_id)

    def apply_progress(self, event: ProgressEvent) -> PlateProgress | None:
        """Fold a progress event into its plate's projection; the new snapshot if it changed."""
        plate_id = self._routes.get(event.execution_id)
        if plate_id is None or event.plate_id != plate_id:
            return None
        accumulator = self._accumulators[plate_id]
        if not accumulator.apply(event):
            return None
        snapshot = accumulator.snapshot()
        self.update(plate_id, progress=snapshot)
        return snapshot

    def failed_wells(self, plate_id: str) -> list[str]:
        """Wells of the plate's current execution that reported an error."""
        accumulator = self._accumulators.get(plate_id)
        return accumulator.failed_wells() if accumulator is not None else []

    def reset_plate(self, plate_id: str) -> None:
        """Forget the plate's execution, progress, queue position, error and pending flag."""
        self.unbind(plate_id)
        record = self.record(plate_id)
        state = record.state
        if state is PlateState.INIT_PENDING:
            state = PlateState.CREATED
        elif state is PlateState.COMPILE_PENDING:
            state = PlateState.COMPILED if record.compiled is not None else PlateState.READY
        self.update(
            plate_id, state=state, execution_id=None, queue_position=None, progress=None, error=None
        )

    def set_activity(self, activity: Activity) -> None:
        """Publish the batch-level state (one reference swap)."""
        self.activity = activity


class WorkflowView:
    """Read-only access to the service's plate data, safe from any thread.

    Compare `version` with the one you last rendered to know whether anything changed; a
    `snapshot()` is one consistent state of every plate.
    """

    __slots__ = ("_presenter", "_state")

    def __init__(self, state: WorkflowState, presenter: ExecutionServerStatusPresenter) -> None:
        self._state = state
        self._presenter = presenter

    @property
    def version(self) -> int:
        """Rises by one on every change of any plate's record."""
        return self._state.store.version

    def snapshot(self) -> StoreSnapshot[str, PlateRecord]:
        """Every plate's record at one version (plate id → record)."""
        return self._state.store.snapshot()

    def plate(self, plate_id: str) -> PlateRecord | None:
        """The plate's record, or None if the service never saw the plate."""
        return self._state.store.get(plate_id)

    def plates(self) -> Mapping[str, PlateRecord]:
        """Alias of `snapshot()`."""
        return self.snapshot()

    def state(self, plate_id: str) -> PlateState | None:
        record = self.plate(plate_id)
        return None if record is None else record.state

    def label(self, plate_id: str) -> str:
        """The row label of the plate (blank for an unknown plate)."""
        record = self.plate(plate_id)
        return "" if record is None else record.label

    def execution_id(self, plate_id: str) -> str | None:
        """The plate's current run execution id."""
        record = self.plate(plate_id)
        return None if record is None else record.execution_id

    def execution_ids(self) -> Mapping[str, str]:
        """Plate id → current execution id, for plates that have one."""
        return {p: r.execution_id for p, r in self.snapshot().items() if r.execution_id}

    def compiled(self, plate_id: str) -> CompiledPlate | None:
        """The plate's latest compile artifact."""
        record = self.plate(plate_id)
        return None if record is None else record.compiled

    def progress(self, plate_id: str) -> PlateProgress | None:
        """The progress projection of the plate's current execution."""
        record = self.plate(plate_id)
        return None if record is None else record.progress

    @property
    def busy(self) -> bool:
        """True while a batch runs."""
        return self._state.activity.busy

    @property
    def busy_plates(self) -> frozenset[str]:
        """Plates in a running batch (a new batch on them is refused)."""
        return self._state.activity.busy_plates

    @property
    def stopping(self) -> bool:
        """True once `stop()` was asked for a running batch (a second stop is a force stop)."""
        return self._state.activity.stopping

    def status_text(self) -> str:
        """The status line for the current plates (whether or not it is on screen)."""
        return self._presenter.build_status_text(self._state.summary())
