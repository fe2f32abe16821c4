"""The progress event: one strict schema, no legacy payloads (docs/protocol.md §6)."""

from __future__ import annotations

import enum
from typing import ClassVar, Literal

import attrs

from zmqruntime.schema import (
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
        if type(seq) is not int or seq < 0:
            raise SchemaError("seq", seq, "expected an integer >= 0")
        stamped = object.__new__(ProgressUpdate)
        for name in _FIELD_NAMES:
            object.__setattr__(stamped, name, getattr(self, name))
        object.__setattr__(stamped, "seq", seq)
        return stamped


_FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in attrs.fields(ProgressUpdate))
