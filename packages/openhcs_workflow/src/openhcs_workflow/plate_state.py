"""The states a plate goes through, as the workflow service records them."""

from __future__ import annotations

import enum

__all__ = ["PlateState"]


class PlateState(enum.StrEnum):
    """One plate's state; values are lowercase strings, the same everywhere they are emitted.

    `created → init_pending → ready → compile_pending → compiled | compile_failed` for plate
    set-up and compile-only batches; `queued → executing → completed | failed | cancelled` for
    a run batch (a plate is `queued` from the moment the batch starts, through its compile and
    while its execution waits in the server's queue).
    """

    CREATED = "created"
    INIT_PENDING = "init_pending"
    READY = "ready"
    COMPILE_PENDING = "compile_pending"
    COMPILED = "compiled"
    COMPILE_FAILED = "compile_failed"
    QUEUED = "queued"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_run_terminal(self) -> bool:
        """True for the ends of a run: completed, failed, cancelled."""
        return self in _RUN_TERMINAL

    @property
    def is_busy(self) -> bool:
        """True while the plate has work in flight (pending, queued or executing)."""
        return self in _BUSY


_RUN_TERMINAL = frozenset({PlateState.COMPLETED, PlateState.FAILED, PlateState.CANCELLED})
_BUSY = frozenset(
    {PlateState.INIT_PENDING, PlateState.COMPILE_PENDING, PlateState.QUEUED, PlateState.EXECUTING}
)
