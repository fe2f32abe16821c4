"""The progress projection: well and plate percent, failure, current step; a function of the
set of events (DESIGN invariant 4), whatever their arrival order and duplicates."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from openhcs_workflow import PlateProgressAccumulator, ProgressState
from zmqruntime.progress import ProgressUpdate


def _event(seq: int, axis: str = "A01", **kw: Any) -> ProgressUpdate:
    fields: dict[str, Any] = {
        "execution_id": "e1",
        "plate_id": "p",
        "axis_id": axis,
        "step_name": f"step{kw.get('step_index', 0)}",
        "step_index": 0,
        "total_steps": 4,
        "phase": "step_started",
        "status": "running",
        "completed": 0,
        "total": 0,
        "percent": 0.0,
        "timestamp": 1.0,
        "seq": seq,
    }
    fields.update(kw)
    return ProgressUpdate(**fields)


def _fold(events: list[ProgressUpdate]) -> PlateProgressAccumulator:
    accumulator = PlateProgressAccumulator("p", "e1")
    for event in events:
        accumulator.apply(event)
    return accumulator


def test_well_percent_from_steps_done_and_pattern_groups() -> None:
    acc = _fold(
        [
            _event(1, "A01", phase="step_completed", step_index=1, status="completed"),  # 2/4
            _event(2, "A02", phase="pattern_group", step_index=2, completed=1, total=4),  # 2.25/4
            _event(3, "A03", phase="axis_completed", step_index=3, status="completed"),  # done
        ]
    )
    assert acc.well_percents() == {"A01": 50.0, "A02": 56.25, "A03": 100.0}
    snap = acc.snapshot()
    assert snap.percent == (50.0 + 56.25 + 100.0) / 3
    assert (snap.wells_total, snap.wells_done, snap.state) == (3, 1, ProgressState.EXECUTING)
    assert (snap.step_name, snap.well) == ("step3", "A03")


def test_the_latest_event_of_a_well_wins_by_seq_not_arrival() -> None:
    late = _event(5, phase="step_started", step_index=3)  # 75 %
    early = _event(2, phase="step_completed", step_index=0, status="completed")  # 25 %
    assert _fold([late, early]).well_percents() == {"A01": 75.0}


def test_an_init_event_announces_the_number_of_wells() -> None:
    acc = _fold(
        [
            _event(1, "", phase="init", total=4, step_index=0),
            _event(2, "A01", phase="axis_completed", step_index=3, status="completed"),
        ]
    )
    snap = acc.snapshot()
    assert (snap.wells_total, snap.percent) == (4, 25.0)


def test_a_failed_well_fails_the_plate_and_all_done_completes_it() -> None:
    failed = _fold([_event(1, "A01", status="error"), _event(2, "A02", step_index=2)])
    assert failed.snapshot().state is ProgressState.FAILED
    assert failed.failed_wells() == ["A01"]
    done = _fold([_event(i, f"A0{i}", phase="axis_completed", step_index=3) for i in range(1, 3)])
    assert done.snapshot().state is ProgressState.COMPLETE
    assert done.snapshot().percent == 100.0


def test_other_executions_are_ignored() -> None:
    acc = _fold([_event(1, execution_id="e0", phase="axis_completed", step_index=3)])
    assert acc.snapshot().wells_total == 0
    assert not acc.apply(_event(2, execution_id="e0"))


def test_duplicates_change_nothing() -> None:
    acc = PlateProgressAccumulator("p", "e1")
    event = _event(1, phase="pattern_group", completed=2, total=3)
    assert acc.apply(event)
    before = acc.snapshot()
    assert not acc.apply(event)
    assert acc.snapshot() == before


_PHASES = ["axis_started", "step_started", "pattern_group", "step_completed", "axis_completed"]


@st.composite
def _events(draw: st.DrawFn) -> list[ProgressUpdate]:
    """Events of one execution with distinct seqs (the server's stamp) over a few wells."""
    count = draw(st.integers(0, 25))
    seqs = draw(st.lists(st.integers(0, 200), min_size=count, max_size=count, unique=True))
    events = []
    for seq in seqs:
        total = draw(st.integers(0, 5))
        events.append(
            _event(
                seq,
                draw(st.sampled_from(["", "A01", "A02", "B01"])),
                phase=draw(st.sampled_from([*_PHASES, "init"])),
                status=draw(st.sampled_from(["started", "running", "completed", "error"])),
                step_index=draw(st.integers(0, 3)),
                total=total,
                completed=draw(st.integers(0, total)),
                step_name=draw(st.sampled_from(["blur", "segment"])),
            )
        )
    return events


@settings(max_examples=150)
@given(events=_events(), data=st.data())
def test_projection_is_a_function_of_the_set_of_events(
    events: list[ProgressUpdate], data: st.DataObject
) -> None:
    reference = _fold(sorted(events, key=lambda e: e.seq))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    arrival = data.draw(st.permutations(events + duplicates))
    folded = _fold(arrival)
    assert folded.snapshot() == reference.snapshot()
    assert folded.well_percents() == reference.well_percents()
    assert folded.failed_wells() == reference.failed_wells()
