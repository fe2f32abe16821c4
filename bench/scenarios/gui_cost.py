"""GUI cost: what the workflow service spends per progress event, 20 plates × 384 wells.

The state is a batch in mid-run: 20 plates, each with its execution bound and every one of
its 384 wells somewhere in a 5-step pipeline. One new event then costs the incremental
refresh the service runs on its loop: fold the event into the plate's projection
(`WorkflowState.apply_progress`: O(1) accumulator, immutable snapshot, versioned store),
recount the status line (`ExecutionServerStatusPresenter.observe` over the 20 plates,
`take_text`) and re-read the changed plate's row label. Each event is timed alone; p50 and
p99 over thousands of events.

Baseline, same run: a full rebuild of the same view from the latest event of every well (what
a resync snapshot holds, and what a design without incremental projections redoes on each
refresh): fresh projections for the 20 plates, 7,680 events folded in, status line, every
row label. Goal: the incremental refresh under 1 ms.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import Measurement, percentile
from openhcs_workflow import ExecutionServerStatusPresenter, PlateState, WorkflowState
from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate

SCENARIO = "GUI cost"
_GOAL_MS = 1.0
_PLATES = 20
_WELLS = 384
_STEPS = 5
_GROUPS = 8  # pattern groups per step


def _well_ids() -> list[str]:
    return [f"{row}{col:02d}" for row in "ABCDEFGHIJKLMNOP" for col in range(1, 25)]


def _event(plate: int, well: str, position: int, seq: int) -> ProgressUpdate:
    """The event of a well at `position` (pattern groups done so far over all steps)."""
    step, group = divmod(position, _GROUPS)
    step = min(step, _STEPS - 1)
    return ProgressUpdate(
        execution_id=f"exec-{plate:02d}",
        plate_id=f"plate-{plate:02d}",
        axis_id=well,
        step_name=f"step-{step}",
        step_index=step,
        total_steps=_STEPS,
        phase=Phase.PATTERN_GROUP,
        status=ProgressStatus.RUNNING,
        completed=group + 1,
        total=_GROUPS,
        percent=100.0 * (group + 1) / _GROUPS,
        timestamp=1_700_000_000.0 + seq,
        seq=seq,
    )


def _mid_run_events() -> list[ProgressUpdate]:
    """The latest event of every well of every plate, wells spread over the pipeline."""
    wells = _well_ids()
    events = []
    for plate in range(_PLATES):
        for index, well in enumerate(wells):
            events.append(_event(plate, well, (index * 7) % (_STEPS * _GROUPS - 1), index + 1))
    return events


def _new_events(count: int) -> list[ProgressUpdate]:
    """`count` later events, round-robin over plates and wells (each one a change)."""
    wells = _well_ids()
    out = []
    for k in range(count):
        plate = k % _PLATES
        index = (k // _PLATES) % _WELLS
        seq = _WELLS + 1 + k // _PLATES
        out.append(_event(plate, wells[index], _STEPS * _GROUPS - 1, seq))
    return out


def _bound_state() -> WorkflowState:
    state = WorkflowState()
    for plate in range(_PLATES):
        plate_id = f"plate-{plate:02d}"
        state.update(plate_id, state=PlateState.EXECUTING)
        state.bind_execution(plate_id, f"exec-{plate:02d}")
        state.update(plate_id, execution_id=f"exec-{plate:02d}")
    return state


def _full_rebuild(events: list[ProgressUpdate]) -> str:
    state = _bound_state()
    presenter = ExecutionServerStatusPresenter()
    for event in events:
        state.apply_progress(event)
    presenter.observe(state.summary())
    labels = [record.label for record in state.store.snapshot().values()]
    assert len(labels) == _PLATES
    return presenter.take_text() or ""


def _incremental(count: int) -> list[float]:
    """Seconds per new event: projection, status line, the changed row's label."""
    state = _bound_state()
    presenter = ExecutionServerStatusPresenter()
    for event in _mid_run_events():
        state.apply_progress(event)
    presenter.observe(state.summary())
    presenter.take_text()
    times = []
    clock = time.perf_counter
    for event in _new_events(count):
        start = clock()
        if state.apply_progress(event) is not None:
            presenter.observe(state.summary())
            presenter.take_text()
            record = state.store.get(event.plate_id)
            assert record is not None
            _ = record.label
        times.append(clock() - start)
    return times


def run(quick: bool) -> list[Measurement]:
    count, rebuilds = (5_000, 5) if quick else (40_000, 20)
    events = _mid_run_events()
    rebuild_times = []
    for _ in range(rebuilds):
        start = time.perf_counter()
        text = _full_rebuild(events)
        rebuild_times.append(time.perf_counter() - start)
    assert text.startswith("Server:"), text
    rebuild_ms = statistics.median(rebuild_times) * 1e3
    times = _incremental(count)
    rows = []
    for pct in (50, 99):
        ours_ms = percentile(times, pct) * 1e3
        rows.append(
            Measurement(
                scenario=SCENARIO,
                name=f"refresh after one new event, p{pct} ({_PLATES} plates × {_WELLS} wells)",
                unit="ms",
                ours=ours_ms,
                baselines={"full rebuild (median)": rebuild_ms},
                lower_is_better=True,
                goal=f"< {_GOAL_MS:g} ms",
                goal_met=ours_ms < _GOAL_MS,
                notes=(
                    f"{count} events timed one by one; rebuild: {len(events)} well events, "
                    f"median of {rebuilds}"
                )
                if pct == 50
                else "",
            )
        )
    return rows
