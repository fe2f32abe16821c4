"""Row labels: the exact texts, terminal over live progress, queue positions."""

from __future__ import annotations

import pytest

from openhcs_workflow import PlateProgress, PlateRecord, PlateState, ProgressState, plate_label


def _progress(execution_id: str = "e1", **kw: object) -> PlateProgress:
    fields: dict[str, object] = {
        "plate_id": "p",
        "execution_id": execution_id,
        "percent": 42.25,
        "state": ProgressState.EXECUTING,
        "wells_total": 4,
        "wells_done": 1,
        "wells_failed": 0,
        "step_name": "SegmentNuclei",
        "well": "B06",
        "seq": 9,
    }
    fields.update(kw)
    return PlateProgress(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "label"),
    [
        (PlateState.CREATED, ""),
        (PlateState.INIT_PENDING, "⏳ Init"),
        (PlateState.READY, "✓ Init"),
        (PlateState.COMPILE_PENDING, "⏳ Compile"),
        (PlateState.COMPILED, "✓ Compiled"),
        (PlateState.COMPILE_FAILED, "❌ Compile Failed"),
        (PlateState.QUEUED, "⏳ Queued"),
        (PlateState.COMPLETED, "✅ Complete"),
        (PlateState.FAILED, "❌ Failed"),
        (PlateState.CANCELLED, "✗ Cancelled"),
    ],
)
def test_state_labels(state: PlateState, label: str) -> None:
    assert plate_label(state) == label


def test_queue_position() -> None:
    assert plate_label(PlateState.QUEUED, queue_position=3) == "⏳ Queued (q#3)"


def test_executing_shows_one_decimal_percent_step_and_well() -> None:
    record = PlateRecord(
        plate_id="p", state=PlateState.EXECUTING, execution_id="e1", progress=_progress()
    )
    assert record.label == "⚙️ Executing 42.2% · SegmentNuclei · B06"


def test_executing_without_events_yet() -> None:
    assert plate_label(PlateState.EXECUTING, execution_id="e1") == "⚙️ Executing 0.0%"


def test_a_failed_well_shows_while_still_executing() -> None:
    progress = _progress(state=ProgressState.FAILED, wells_failed=1)
    label = plate_label(PlateState.EXECUTING, execution_id="e1", progress=progress)
    assert label == "❌ Failed 42.2% · SegmentNuclei · B06"


def test_progress_of_another_execution_is_not_shown() -> None:
    label = plate_label(PlateState.EXECUTING, execution_id="e2", progress=_progress("e1"))
    assert label == "⚙️ Executing 0.0%"


@pytest.mark.parametrize("state", [PlateState.COMPLETED, PlateState.FAILED, PlateState.CANCELLED])
def test_terminal_label_wins_over_live_progress(state: PlateState) -> None:
    complete = _progress(percent=100.0, state=ProgressState.COMPLETE)
    label = plate_label(state, execution_id="e1", progress=complete, queue_position=2)
    assert (
        label
        == {
            PlateState.COMPLETED: "✅ Complete",
            PlateState.FAILED: "❌ Failed",
            PlateState.CANCELLED: "✗ Cancelled",
        }[state]
    )
