"""Per-plate progress built from an execution's progress events.

The projection of a plate is a function of the *set* of events of its current execution: each
quantity is a join that does not care about arrival order, and applying an event twice changes
nothing (DESIGN invariant 4).

- A well's percent comes from its event with the highest `seq`: `(steps done + the current
  step's pattern-group fraction) / total steps`, so `step_started` of step i is `i/T`, a
  `pattern_group` event adds `completed/total` of a step, `step_completed` is `(i+1)/T` and
  `axis_completed` is 100 %.
- A well is failed when any of its events has status `error` (sticky); done when its latest
  event is a completed `axis_completed`.
- The plate's percent is the mean over its wells: the wells seen, or more when a plate-level
  `init` event (empty `axis_id`) announces the number of wells in `total`; unseen wells count 0.
- The current step and well are those of the plate's event with the highest `seq`.
- One failed well makes the plate's projected state `failed`; all wells done makes it `complete`.

Each event costs O(1): a running (integer) sum of well percents is adjusted, not recomputed.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

__all__ = ["PlateProgress", "PlateProgressAccumulator", "ProgressEvent", "ProgressState"]


class ProgressEvent(Protocol):
    """The fields of `zmqruntime.progress.ProgressUpdate` the projection reads."""

    @property
    def execution_id(self) -> str: ...
    @property
    def plate_id(self) -> str: ...
    @property
    def axis_id(self) -> str: ...
    @property
    def step_name(self) -> str: ...
    @property
    def step_index(self) -> int: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def phase(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def completed(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def seq(self) -> int: ...


class ProgressState(enum.StrEnum):
    """What a plate's events say, before the server's final word."""

    EXECUTING = "executing"
    COMPLETE = "complete"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class PlateProgress:
    """An immutable snapshot of one plate's projection (what a row shows)."""

    plate_id: str
    execution_id: str
    percent: float
    state: ProgressState
    wells_total: int
    wells_done: int
    wells_failed: int
    step_name: str | None
    well: str | None
    seq: int


def well_percent(event: ProgressEvent) -> float:
    """The percent of its well an event stands for (see the module docstring)."""
    total_steps = max(event.total_steps, 1)
    phase = str(event.phase)
    if phase == "axis_completed":
        return 100.0 if str(event.status) != "error" else _steps(event.step_index, 0.0, total_steps)
    if phase == "step_completed":
        fraction = 1.0
    elif phase == "pattern_group":
        fraction = event.completed / event.total if event.total > 0 else 0.0
    else:  # axis_started, step_started
        fraction = 0.0
    return _steps(event.step_index, fraction, total_steps)


def _steps(index: int, fraction: float, total: int) -> float:
    return min(100.0, max(0.0, 100.0 * (index + min(max(fraction, 0.0), 1.0)) / total))


# Percents are summed as integers (millionths of a percent) so the sum is exact and the
# plate's percent does not depend on the order events were added in.
_UNITS = 1_000_000


class _Well:
    __slots__ = ("done", "failed", "seq", "units")

    def __init__(self) -> None:
        self.seq = -1
        self.units = 0
        self.done = False
        self.failed = False


class PlateProgressAccumulator:
    """The mutable projection of one plate for one execution; `apply` is O(1)."""

    __slots__ = (
        "_done",
        "_failed",
        "_last",
        "_planned_wells",
        "_top_seq",
        "_top_well_seq",
        "_units",
        "_wells",
        "execution_id",
        "plate_id",
    )

    def __init__(self, plate_id: str, execution_id: str) -> None:
        self.plate_id = plate_id
        self.execution_id = execution_id
        self._wells: dict[str, _Well] = {}
        self._units = 0
        self._done = 0
        self._failed = 0
        self._planned_wells = 0
        self._top_seq = -1
        self._top_well_seq = -1
        self._last: tuple[str, str] | None = None  # (step name, well) of the top-seq well event

    def apply(self, event: ProgressEvent) -> bool:
        """Fold one event in; True if the snapshot changed. Other executions' events are ignored."""
        if event.execution_id != self.execution_id:
            return False
        changed = False
        if event.seq > self._top_seq:
            self._top_seq = event.seq
            changed = True
        axis = event.axis_id
        if not axis:
            if str(event.phase) == "init" and event.total > self._planned_wells:
                self._planned_wells = event.total
                changed = True
            return changed
        well = self._wells.get(axis)
        if well is None:
            well = self._wells[axis] = _Well()
            changed = True
        if str(event.status) == "error" and not well.failed:
            well.failed = True
            self._failed += 1
            changed = True
        if event.seq > well.seq:
            well.seq = event.seq
            units = round(well_percent(event) * _UNITS)
            self._units += units - well.units
            well.units = units
            done = str(event.phase) == "axis_completed" and str(event.status) != "error"
            self._done += int(done) - int(well.done)
            well.done = done
            changed = True
        if event.seq > self._top_well_seq:
            self._top_well_seq = event.seq
            self._last = (event.step_name, axis)
            changed = True
        return changed

    @property
    def wells_total(self) -> int:
        """Wells seen, or the number an `init` event announced if that is larger."""
        return max(len(self._wells), self._planned_wells)

    def snapshot(self) -> PlateProgress:
        """The current projection as an immutable value."""
        wells_total = self.wells_total
        if self._failed:
            state = ProgressState.FAILED
        elif wells_total and self._done == wells_total:
            state = ProgressState.COMPLETE
        else:
            state = ProgressState.EXECUTING
        step, well = self._last if self._last is not None else (None, None)
        return PlateProgress(
            plate_id=self.plate_id,
            execution_id=self.execution_id,
            percent=min(100.0, self._units / _UNITS / wells_total) if wells_total else 0.0,
            state=state,
            wells_total=wells_total,
            wells_done=self._done,
            wells_failed=self._failed,
            step_name=step,
            well=well,
            seq=self._top_seq,
        )

    def well_percents(self) -> dict[str, float]:
        """Each seen well's percent (a copy)."""
        return {axis: well.units / _UNITS for axis, well in self._wells.items()}

    def failed_wells(self) -> list[str]:
        """The wells that reported an error, sorted."""
        return sorted(axis for axis, well in self._wells.items() if well.failed)
