"""progress_batch_reset clears the batch's plates and nothing else."""

from __future__ import annotations

from openhcs_workflow import PlateState, WorkflowState, progress_batch_reset
from zmqruntime.progress import ProgressUpdate


class _Poller:
    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def _event(execution_id: str, plate_id: str, seq: int) -> ProgressUpdate:
    return ProgressUpdate(
        execution_id=execution_id,
        plate_id=plate_id,
        axis_id="A01",
        step_name="blur",
        step_index=0,
        total_steps=2,
        phase="step_completed",
        status="completed",
        completed=0,
        total=0,
        percent=50.0,
        timestamp=1.0,
        seq=seq,
    )


def _running_plate(state: WorkflowState, plate_id: str, execution_id: str) -> None:
    state.bind_execution(plate_id, execution_id)
    state.update(
        plate_id, state=PlateState.EXECUTING, execution_id=execution_id, queue_position=2, error="x"
    )
    assert state.apply_progress(_event(execution_id, plate_id, 1)) is not None


def test_reset_clears_only_the_batch_plates() -> None:
    state = WorkflowState()
    _running_plate(state, "p1", "e1")
    _running_plate(state, "p2", "e2")
    other = state.record("p2")
    poller = _Poller()
    progress_batch_reset(state, ["p1"], pollers=[poller])
    p1 = state.record("p1")
    assert (p1.execution_id, p1.progress, p1.queue_position, p1.error) == (None, None, None, None)
    assert state.plate_of("e1") is None  # old events no longer reach p1
    assert state.apply_progress(_event("e1", "p1", 2)) is None
    assert state.record("p2") == other  # untouched
    assert state.plate_of("e2") == "p2"
    assert state.apply_progress(_event("e2", "p2", 2)) is not None
    assert poller.resets == 1


def test_reset_clears_pending_flags() -> None:
    state = WorkflowState()
    state.update("a", state=PlateState.INIT_PENDING)
    state.update("b", state=PlateState.COMPILE_PENDING)
    state.update("c", state=PlateState.COMPLETED)
    progress_batch_reset(state, ["a", "b", "c"])
    assert [state.record(p).state for p in "abc"] == [
        PlateState.CREATED,
        PlateState.READY,
        PlateState.COMPLETED,
    ]


def test_reset_raises_the_version_readers_compare() -> None:
    state = WorkflowState()
    _running_plate(state, "p1", "e1")
    before = state.store.version
    progress_batch_reset(state, ["p1"])
    assert state.store.version > before
