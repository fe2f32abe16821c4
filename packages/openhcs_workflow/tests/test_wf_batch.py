"""The terminal funnel's ledger and the batch report's texts."""

from __future__ import annotations

import pytest

from openhcs_workflow import BatchKind, PlateOutcome, PlateState
from openhcs_workflow.batch import BatchLedger


def test_a_plate_settles_once() -> None:
    ledger = BatchLedger(1, BatchKind.RUN, ("a", "b"))
    assert ledger.settle(PlateOutcome(plate_id="a", state=PlateState.COMPLETED))
    assert not ledger.settle(PlateOutcome(plate_id="a", state=PlateState.FAILED, reason="late"))
    assert ledger.unsettled() == ["b"]
    assert not ledger.complete
    with pytest.raises(RuntimeError, match="unsettled"):
        ledger.report()
    assert ledger.settle(PlateOutcome(plate_id="b", state=PlateState.CANCELLED))
    report = ledger.report()
    assert [o.state for o in report.outcomes] == [PlateState.COMPLETED, PlateState.CANCELLED]
    assert (report.completed, report.failed, report.cancelled) == (1, 0, 1)


def test_only_the_batch_plates_settle() -> None:
    ledger = BatchLedger(1, BatchKind.RUN, ("a",))
    with pytest.raises(KeyError, match="not in batch 1"):
        ledger.settle(PlateOutcome(plate_id="z", state=PlateState.COMPLETED))


def _report(kind: BatchKind, *outcomes: PlateOutcome) -> str:
    ledger = BatchLedger(7, kind, tuple(o.plate_id for o in outcomes))
    for outcome in outcomes:
        ledger.settle(outcome)
    return ledger.report().summary()


def test_run_summary_keeps_cancelled_apart_from_failed() -> None:
    text = _report(
        BatchKind.RUN,
        PlateOutcome(plate_id="a", state=PlateState.COMPLETED),
        PlateOutcome(plate_id="b", state=PlateState.FAILED, reason="boom"),
        PlateOutcome(plate_id="c", state=PlateState.CANCELLED, reason="stopped"),
    )
    assert text == "All done: 1 completed, 1 failed, 1 cancelled"


def test_compile_summary_names_failures_in_one_message() -> None:
    text = _report(
        BatchKind.COMPILE,
        PlateOutcome(plate_id="a", state=PlateState.COMPILED),
        PlateOutcome(plate_id="b", state=PlateState.COMPILE_FAILED, reason="no step 'x'"),
        PlateOutcome(plate_id="c", state=PlateState.COMPILED),
        PlateOutcome(plate_id="d", state=PlateState.CANCELLED),
    )
    assert text == "Compiled 2/4 plates; 1 failed: b: no step 'x'; 1 cancelled"


def test_result_dict_for_the_host() -> None:
    outcome = PlateOutcome(
        plate_id="a",
        state=PlateState.FAILED,
        execution_id="e1",
        reason="boom (handler_error)",
        error={"code": "handler_error", "message": "boom", "traceback": "..."},
    )
    assert outcome.to_result() == {
        "status": "failed",
        "plate_id": "a",
        "execution_id": "e1",
        "message": "boom (handler_error)",
        "result": None,
        "error": {"code": "handler_error", "message": "boom", "traceback": "..."},
    }
