"""The batch boundary: what a new batch must not inherit from earlier ones (DESIGN invariant 3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from openhcs_workflow.workflow_state import WorkflowState

__all__ = ["Resettable", "progress_batch_reset"]


class Resettable(Protocol):
    """Anything holding a snapshot that must not outlive the batch (an `IntervalSnapshotPoller`)."""

    def reset(self) -> None: ...


def progress_batch_reset(
    state: WorkflowState, plates: Iterable[str], *, pollers: Iterable[Resettable] = ()
) -> None:
    """Clear, for `plates` only, this service's progress projection, pending flags, execution
    ids, queue positions and last errors, stop routing their old executions' events to them,
    and reset this service's own snapshot pollers.

    Other plates keep everything, and nothing outside `state` and `pollers` is touched (no
    process-wide registry, no other consumer's view).
    """
    for plate_id in plates:
        state.reset_plate(plate_id)
    for poller in pollers:
        poller.reset()
