"""The text a plate row shows for its state and progress."""

from __future__ import annotations

from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.progress_projection import PlateProgress, ProgressState

__all__ = ["STATE_LABELS", "plate_label"]

#: The label of each state when no live detail applies. `created` is deliberately blank.
STATE_LABELS: dict[PlateState, str] = {
    PlateState.CREATED: "",
    PlateState.INIT_PENDING: "⏳ Init",
    PlateState.READY: "✓ Init",
    PlateState.COMPILE_PENDING: "⏳ Compile",
    PlateState.COMPILED: "✓ Compiled",
    PlateState.COMPILE_FAILED: "❌ Compile Failed",
    PlateState.QUEUED: "⏳ Queued",
    PlateState.EXECUTING: "⚙️ Executing",
    PlateState.COMPLETED: "✅ Complete",
    PlateState.FAILED: "❌ Failed",
    PlateState.CANCELLED: "✗ Cancelled",
}


def plate_label(
    state: PlateState,
    *,
    queue_position: int | None = None,
    progress: PlateProgress | None = None,
    execution_id: str | None = None,
) -> str:
    """The row label: a terminal or pending state always wins over live progress.

    Queued: `⏳ Queued (q#3)` with the server queue position when known. Executing:
    `⚙️ Executing 42.5% · SegmentNuclei · B06` (one-decimal percent, then the current step and
    well when an event named them), or `❌ Failed 42.5% · …` once a well has failed while the
    execution still runs. Progress of another execution than `execution_id` is not shown.
    """
    if state is PlateState.QUEUED and queue_position is not None:
        return f"⏳ Queued (q#{queue_position})"
    if state is not PlateState.EXECUTING:
        return STATE_LABELS[state]
    if progress is None or progress.execution_id != execution_id:
        return f"{STATE_LABELS[state]} 0.0%"
    head = "❌ Failed" if progress.state is ProgressState.FAILED else STATE_LABELS[state]
    text = f"{head} {progress.percent:.1f}%"
    if progress.step_name:
        text += f" · {progress.step_name}"
    if progress.well:
        text += f" · {progress.well}"
    return text
