"""The progress event: one strict schema, no legacy payloads (docs/protocol.md §6)."""

from __future__ import annotations

import enum
from typing import ClassVar, Literal

import attrs

from zmqruntime.schema import (
    INT_MAX,
    WIRE_REQUIRED,
    NonEmptyStr,
    NonNegativeFloat,
    NonNegativeInt,
    Percent,
    PositiveInt,
    SchemaError,
    WireModel,
)

__all__ = ["Phase", "ProgressStatus", "ProgressUpdate"]


class Phase(enum.StrEnum):
    """Where in the work a progress event comes from."""

    INIT = "init"
    COMPILE = "compile"
    AXIS_STARTED = "axis_started"
    STEP_STARTED = "step_started"
    PATTERN_GROUP = "pattern_group"
    STEP_COMPLETED = "step_completed"
    AXIS_COMPLETED = "axis_completed"


class ProgressStatus(enum.StrEnum):
    """The state a progress event reports for its phase."""

    STARTED = "started"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class ProgressUpdate(WireModel):
    """One progress event of one execution, on one axis (well) and step.

    `seq` is stamped by the server (per execution, strictly increasing on the events channel);
    a worker sends its own counter, which the server replaces. Rules: `0 <= step_index <
    total_steps`, `0 <= completed <= total`, `0 <= percent <= 100`, finite timestamp.
    `to_wire()` leaves out the optional fields that are None.
    """

    TYPE: ClassVar[str] = "progress"
    SCHEMA_NAME: ClassVar[str] = "progress"
    _OMIT_NONE: ClassVar[bool] = True

    type: Literal["progress"] = attrs.field(default="progress", metadata={WIRE_REQUIRED: True})
    execution_id: NonEmptyStr
    plate_id: NonEmptyStr
    axis_id: str
    step_name: str
    step_index: NonNegativeInt
    total_steps: PositiveInt
    phase: Phase
    status: ProgressStatus
    completed: NonNegativeInt
    total: NonNegativeInt
    percent: Percent
    timestamp: NonNegativeFloat
    seq: NonNegativeInt
    pattern: str | None = None
    component: str | None = None
    message: str | None = None
    error: str | None = None
    traceback: str | None = None

    def _check(self) -> None:
        if self.step_index >= self.total_steps:
            raise SchemaError(
                "step_index", self.step_index, f"must be < total_steps ({self.total_steps})"
            )
        if self.completed > self.total:
            raise SchemaError("completed", self.completed, f"must be <= total ({self.total})")

    def with_seq(self, seq: int) -> ProgressUpdate:
        """This update re-stamped with `seq` (how the server numbers it on the events channel).

        Only `seq` is checked: every other field is this already validated update's, so the
        copy skips `attrs.evolve`'s full validation, a third of the server's cost per update.
        """
        if type(seq) is not int or not 0 <= seq <= INT_MAX:
            raise SchemaError("seq", seq, f"expected an integer from 0 to {INT_MAX}")
        return _restamped(self, seq)


def _restamped(update: ProgressUpdate, seq: int) -> ProgressUpdate:
    """A copy of `update` with `seq`: one statement per field, a third cheaper than a loop over
    the field names (this runs once per update the server publishes). A field added to
    `ProgressUpdate` must be added here; the test of `with_seq` compares with `attrs.evolve`."""
    new = object.__new__(ProgressUpdate)
    put = object.__setattr__
    put(new, "type", update.type)
    put(new, "execution_id", update.execution_id)
    put(new, "plate_id", update.plate_id)
    put(new, "axis_id", update.axis_id)
    put(new, "step_name", update.step_name)
    put(new, "step_index", update.step_index)
    put(new, "total_steps", update.total_steps)
    put(new, "phase", update.phase)
    put(new, "status", update.status)
    put(new, "completed", update.completed)
    put(new, "total", update.total)
    put(new, "percent", update.percent)
    put(new, "timestamp", update.timestamp)
    put(new, "pattern", update.pattern)
    put(new, "component", update.component)
    put(new, "message", update.message)
    put(new, "error", update.error)
    put(new, "traceback", update.traceback)
    put(new, "seq", seq)
    return new
