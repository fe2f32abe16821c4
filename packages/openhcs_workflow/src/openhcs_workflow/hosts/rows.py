"""What a plate row shows, read from the service's `WorkflowView` (never written by a host)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import attrs

from openhcs_workflow.plate_labels import STATE_LABELS
from openhcs_workflow.plate_record import PlateRecord
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.workflow_state import WorkflowView

__all__ = ["BatchProgress", "PlateRow", "batch_progress", "plate_name"]


def plate_name(plate_id: str) -> str:
    """A short name for a plate: the last part of its path (plate ids are plate directories)."""
    name = os.path.basename(plate_id.rstrip("/\\"))
    return name or plate_id


@attrs.frozen(kw_only=True)
class PlateRow:
    """One plate as a row: its state and label, and how far its current execution is.

    `percent` is 100 for a completed plate, the last projected percent for a failed or
    cancelled one, 0 before execution starts. `wells_done`/`wells_total`, the current
    `step_name` and `well` come from the execution's progress (0/0 and None before the first
    event); `error` is why the plate failed or was cancelled.
    """

    plate_id: str
    name: str
    state: PlateState
    label: str
    percent: float
    wells_done: int
    wells_total: int
    step_name: str | None
    well: str | None
    error: str | None

    @property
    def finished(self) -> bool:
        """True once the plate is completed, failed or cancelled."""
        return self.state.is_run_terminal

    @property
    def state_text(self) -> str:
        """The state's label without live detail (`⚙️ Executing`, `✅ Complete`, ...)."""
        return STATE_LABELS[self.state]

    @classmethod
    def of(cls, record: PlateRecord) -> PlateRow:
        progress = record.progress
        if progress is not None and progress.execution_id != record.execution_id:
            progress = None  # a previous execution's projection is not this run's
        percent = 0.0 if progress is None else progress.percent
        if record.state is PlateState.COMPLETED:
            percent = 100.0
        return cls(
            plate_id=record.plate_id,
            name=plate_name(record.plate_id),
            state=record.state,
            label=record.label,
            percent=percent,
            wells_done=0 if progress is None else progress.wells_done,
            wells_total=0 if progress is None else progress.wells_total,
            step_name=None if progress is None else progress.step_name,
            well=None if progress is None else progress.well,
            error=record.error,
        )


@attrs.frozen(kw_only=True)
class BatchProgress:
    """The rows of one batch's plates, in batch order, and the batch's overall progress."""

    rows: tuple[PlateRow, ...]

    @property
    def finished(self) -> int:
        """Plates of the batch that reached a terminal state."""
        return sum(row.finished for row in self.rows)

    @property
    def percent(self) -> float:
        """The batch's progress: every finished plate counts 100 %, the others their percent."""
        if not self.rows:
            return 0.0
        return sum(100.0 if row.finished else row.percent for row in self.rows) / len(self.rows)

    def count(self, state: PlateState) -> int:
        return sum(row.state is state for row in self.rows)


def batch_progress(view: WorkflowView, plate_ids: Iterable[str]) -> BatchProgress:
    """The rows of `plate_ids` from one consistent snapshot of `view` (unknown plates skipped)."""
    snapshot = view.snapshot()
    rows = (PlateRow.of(snapshot[p]) for p in plate_ids if p in snapshot)
    return BatchProgress(rows=tuple(rows))
