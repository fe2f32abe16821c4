"""What the service records about one plate, as immutable values the host can read."""

from __future__ import annotations

import attrs

from openhcs_workflow.compile_job import CompileJob
from openhcs_workflow.plate_labels import plate_label
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.progress_projection import PlateProgress

__all__ = ["CompiledPlate", "PlateRecord"]


@attrs.frozen(kw_only=True)
class CompiledPlate:
    """A compile artifact kept on the server, and the job it was compiled from."""

    artifact_id: str
    job: CompileJob

    @property
    def signature(self) -> str:
        """The job's signature: a later job with the same one may reuse this artifact."""
        return self.job.signature


@attrs.frozen(kw_only=True)
class PlateRecord:
    """One plate's state in the service.

    `execution_id` is the plate's current run execution (None outside a run, and cleared by a
    batch reset); `queue_position` its 1-based place in the server's queue while queued;
    `compiled` the latest compile artifact; `error` the reason of the latest failure or cancel;
    `batch_id` the batch that last touched the plate; `progress` the projection of the current
    execution's progress events.
    """

    plate_id: str
    state: PlateState = PlateState.CREATED
    execution_id: str | None = None
    queue_position: int | None = None
    compiled: CompiledPlate | None = None
    error: str | None = None
    batch_id: int | None = None
    progress: PlateProgress | None = None

    @property
    def label(self) -> str:
        """The row label (see `plate_label`)."""
        return plate_label(
            self.state,
            queue_position=self.queue_position,
            progress=self.progress,
            execution_id=self.execution_id,
        )
