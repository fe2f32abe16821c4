"""Status-line text and the rule that it never overwrites a newer message."""

from __future__ import annotations

import pytest

from openhcs_workflow import ExecutionServerStatusPresenter, PlateState, StatusSummary


def test_ready_when_no_plate_is_in_a_workflow_state() -> None:
    summary = StatusSummary.of([(PlateState.CREATED, 0.0), (PlateState.READY, 0.0)])
    assert ExecutionServerStatusPresenter.build_status_text(summary) == "Ready"


def test_the_documented_line() -> None:
    plates = (
        [(PlateState.COMPILE_PENDING, 0.0)] * 2
        + [(PlateState.EXECUTING, 50.0)]
        + [(PlateState.COMPILED, 0.0)]
        + [(PlateState.COMPLETED, 0.0)] * 3
        + [(PlateState.FAILED, 0.0)]
    )
    text = ExecutionServerStatusPresenter.build_status_text(StatusSummary.of(plates))
    # (0 + 0 + 50 + 100 + 300 + 0) / 8 = 56.25
    assert text == (
        "Server: ⏳ 2 compiling, ⚙️ 1 executing, ✓ 1 compiled, ✅ 3 complete, ❌ 1 failed"
        " | 8 plates | avg 56.2%"
    )


def test_only_non_zero_parts_in_order_including_queued_and_cancelled() -> None:
    plates = [
        (PlateState.CANCELLED, 40.0),
        (PlateState.QUEUED, 0.0),
        (PlateState.COMPILE_FAILED, 0.0),
        (PlateState.EXECUTING, 25.0),
    ]
    text = ExecutionServerStatusPresenter.build_status_text(StatusSummary.of(plates))
    assert text == (
        "Server: 🕒 1 queued, ⚙️ 1 executing, ❌ 1 failed, ✗ 1 cancelled | 4 plates | avg 16.2%"
    )


@pytest.mark.parametrize(
    ("state", "percent", "expected"),
    [
        (PlateState.COMPLETED, 10.0, 100.0),
        (PlateState.COMPILED, 0.0, 100.0),
        (PlateState.EXECUTING, 62.5, 62.5),
    ],
)
def test_finished_states_count_as_full(state: PlateState, percent: float, expected: float) -> None:
    assert StatusSummary.of([(state, percent)]).average_percent == expected


def test_a_newer_message_is_not_overwritten_by_an_older_summary() -> None:
    presenter = ExecutionServerStatusPresenter()
    running = StatusSummary.of([(PlateState.EXECUTING, 50.0)])
    done = StatusSummary.of([(PlateState.COMPLETED, 100.0)])
    presenter.observe(running)
    assert presenter.take_text() == "Server: ⚙️ 1 executing | 1 plates | avg 50.0%"
    # The last plate finishes, then "All done" is shown before the coalesced refresh ran.
    presenter.observe(done)
    presenter.message_emitted()
    assert presenter.take_text() is None
    presenter.observe(done)  # later refreshes with the same summary stay quiet
    assert presenter.take_text() is None
    # A change after the message is newer than it, so it is shown.
    presenter.observe(StatusSummary.of([(PlateState.QUEUED, 0.0)]))
    assert presenter.take_text() == "Server: 🕒 1 queued | 1 plates | avg 0.0%"


def test_unchanged_summary_is_shown_once() -> None:
    presenter = ExecutionServerStatusPresenter()
    summary = StatusSummary.of([(PlateState.QUEUED, 0.0)])
    presenter.observe(summary)
    assert presenter.pending
    assert presenter.take_text() is not None
    presenter.observe(summary)
    assert not presenter.pending
    assert presenter.take_text() is None
