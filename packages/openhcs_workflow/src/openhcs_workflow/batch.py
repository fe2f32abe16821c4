"""Batch values: what a caller asks for (`PlateSpec`), and what a batch ends with.

`BatchLedger` is the bookkeeping of the terminal funnel: it accepts exactly one outcome per
plate of its batch and knows when the last one arrived.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from openhcs_workflow.compile_job import PipelineStep, pipeline_from_json
from openhcs_workflow.json_value import JSONObject, json_object_copy
from openhcs_workflow.plate_state import PlateState

__all__ = [
    "BatchBusyError",
    "BatchKind",
    "BatchLedger",
    "BatchReport",
    "CompileFailurePolicy",
    "PlateOutcome",
    "PlateSpec",
]


class BatchKind(enum.StrEnum):
    """A compile-only batch, or a run (compile all, then execute all)."""

    COMPILE = "compile"
    RUN = "run"


class CompileFailurePolicy(enum.StrEnum):
    """What a run does when a plate fails to compile.

    `abort`: nothing runs; compiles still in flight are cancelled on the server, the failed
    plate ends `failed` and every other plate `cancelled`. `run_compiled`: the plates that
    compiled run; the failed ones end `failed`.
    """

    ABORT = "abort"
    RUN_COMPILED = "run_compiled"


def _plate_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"plate.{attribute.name}: expected a non-empty string, got {value!r}")


def _convert_override(value: object) -> JSONObject | None:
    return None if value is None else json_object_copy(value, "plate.config_override")


def _convert_pipeline(value: object) -> tuple[PipelineStep, ...]:
    return pipeline_from_json(value, "plate.pipeline")


@attrs.frozen(kw_only=True)
class PlateSpec:
    """One plate of a batch request: its id, the live pipeline, an optional config override.

    Take the pipeline from the editor's current state when the user presses Compile/Run (not
    from a cached copy), so the latest edits are what runs.
    """

    plate_id: str = attrs.field(validator=_plate_id)
    pipeline: tuple[PipelineStep, ...] = attrs.field(converter=_convert_pipeline)
    config_override: JSONObject | None = attrs.field(default=None, converter=_convert_override)


@attrs.frozen(kw_only=True)
class PlateOutcome:
    """How one plate of a batch ended: its terminal state and why.

    Run batches end plates `completed`, `failed` or `cancelled`; compile-only batches end them
    `compiled`, `compile_failed` or `cancelled`. `result` is the execution's result (completed
    runs), `error` the server's error record (`{"code", "message", "traceback"}`) when there is
    one, `reason` a one-line explanation for anything but success.
    """

    plate_id: str
    state: PlateState
    execution_id: str | None = None
    reason: str | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.state in (PlateState.COMPLETED, PlateState.COMPILED)

    @property
    def failed(self) -> bool:
        return self.state in (PlateState.FAILED, PlateState.COMPILE_FAILED)

    @property
    def cancelled(self) -> bool:
        return self.state is PlateState.CANCELLED

    def to_result(self) -> dict[str, Any]:
        """The dict handed to `emit_execution_complete` / `on_plate_completed`."""
        return {
            "status": self.state.value,
            "plate_id": self.plate_id,
            "execution_id": self.execution_id,
            "message": self.reason,
            "result": self.result,
            "error": dict(self.error) if self.error is not None else None,
        }


@attrs.frozen(kw_only=True)
class BatchReport:
    """Every plate's outcome, in batch order; the counts always add up to the batch size."""

    batch_id: int
    kind: BatchKind
    outcomes: tuple[PlateOutcome, ...]

    @property
    def completed(self) -> int:
        """Plates that succeeded (completed runs, or compiled plates of a compile batch)."""
        return sum(o.succeeded for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.outcomes)

    @property
    def cancelled(self) -> int:
        return sum(o.cancelled for o in self.outcomes)

    @property
    def by_plate(self) -> Mapping[str, PlateOutcome]:
        return {o.plate_id: o for o in self.outcomes}

    def summary(self) -> str:
        """`All done: 3 completed, 1 failed, 0 cancelled` for a run; for a compile batch
        `Compiled 3/4 plates; 1 failed: <plate>: <reason>` (plus `; n cancelled` if any)."""
        if self.kind is BatchKind.RUN:
            return (
                f"All done: {self.completed} completed, {self.failed} failed, "
                f"{self.cancelled} cancelled"
            )
        text = f"Compiled {self.completed}/{len(self.outcomes)} plates"
        failures = [o for o in self.outcomes if o.failed]
        if failures:
            details = "; ".join(f"{o.plate_id}: {o.reason}" for o in failures)
            text += f"; {len(failures)} failed: {details}"
        if self.cancelled:
            text += f"; {self.cancelled} cancelled"
        return text

    def failure_summary(self) -> str | None:
        """One message naming every failed plate of a run and why, or None."""
        failures = [o for o in self.outcomes if o.failed]
        if self.kind is BatchKind.COMPILE or not failures:
            return None
        noun = "plate" if len(failures) == 1 else "plates"
        details = "; ".join(f"{o.plate_id}: {o.reason}" for o in failures)
        return f"{len(failures)} {noun} failed: {details}"


class BatchBusyError(RuntimeError):
    """A batch was refused because some of its plates are already in a running batch."""

    def __init__(self, message: str, plates: Iterable[str]) -> None:
        super().__init__(message)
        self.plates = tuple(plates)


class BatchLedger:
    """One batch's terminal outcomes: at most one per plate, and only for its plates."""

    __slots__ = ("_outcomes", "batch_id", "kind", "plates")

    def __init__(self, batch_id: int, kind: BatchKind, plates: tuple[str, ...]) -> None:
        self.batch_id = batch_id
        self.kind = kind
        self.plates = plates
        self._outcomes: dict[str, PlateOutcome] = {}

    def settle(self, outcome: PlateOutcome) -> bool:
        """Record the plate's outcome; False (nothing recorded) if it already has one."""
        if outcome.plate_id not in self.plates:
            raise KeyError(f"plate {outcome.plate_id!r} is not in batch {self.batch_id}")
        if outcome.plate_id in self._outcomes:
            return False
        self._outcomes[outcome.plate_id] = outcome
        return True

    def is_settled(self, plate_id: str) -> bool:
        return plate_id in self._outcomes

    def unsettled(self) -> list[str]:
        """Plates without an outcome yet, in batch order."""
        return [p for p in self.plates if p not in self._outcomes]

    @property
    def settled_count(self) -> int:
        return len(self._outcomes)

    @property
    def complete(self) -> bool:
        return len(self._outcomes) == len(self.plates)

    def report(self) -> BatchReport:
        """The report (every plate must be settled)."""
        if not self.complete:
            raise RuntimeError(f"batch {self.batch_id} still has unsettled plates")
        return BatchReport(
            batch_id=self.batch_id,
            kind=self.kind,
            outcomes=tuple(self._outcomes[p] for p in self.plates),
        )
