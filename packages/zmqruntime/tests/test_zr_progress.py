"""ProgressUpdate: the issue's example parses; each deviation the issue lists is refused by name."""

from __future__ import annotations

import pytest

from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.testing import example_progress

EXAMPLE = example_progress()  # the issue's example, plus seq


def test_the_issue_example_parses_and_round_trips() -> None:
    update = ProgressUpdate.from_wire(EXAMPLE)
    assert update.phase is Phase.PATTERN_GROUP
    assert update.status is ProgressStatus.RUNNING
    assert (update.completed, update.total, update.percent) == (14, 50, 28.0)
    assert update.pattern is None
    assert update.traceback is None
    assert update.to_wire() == EXAMPLE


def test_optional_fields_appear_only_when_set() -> None:
    update = ProgressUpdate.from_wire({**EXAMPLE, "pattern": "A01_*", "error": None})
    assert update.to_wire() == {**EXAMPLE, "pattern": "A01_*"}


REQUIRED = [name for name in EXAMPLE]


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_required_field_is_named(field: str) -> None:
    data = {k: v for k, v in EXAMPLE.items() if k != field}
    with pytest.raises(SchemaError) as caught:
        ProgressUpdate.from_wire(data)
    assert caught.value.path == f"progress.{field}"
    assert "missing" in str(caught.value)


DEVIATIONS = [
    # (field, bad value, words the reason must contain)
    ("extra_field", 1, "unknown field"),
    ("well_id", "B06", "unknown field"),  # a legacy key is not silently accepted
    ("task_id", "e1", "unknown field"),
    ("completed", True, "not boolean"),
    ("total", False, "not boolean"),
    ("percent", True, "not boolean"),
    ("timestamp", True, "not boolean"),
    ("step_index", 2.0, "not number"),
    ("completed", 14.0, "not number"),
    ("total_steps", 7.5, "not number"),
    ("seq", 1.0, "not number"),
    ("percent", float("nan"), "finite"),
    ("percent", float("inf"), "finite"),
    ("timestamp", float("-inf"), "finite"),
    ("timestamp", float("nan"), "finite"),
    ("completed", 51, "<= total"),
    ("completed", -1, ">= 0"),
    ("total", -1, ">= 0"),
    ("step_index", -1, ">= 0"),
    ("total_steps", 0, ">= 1"),
    ("seq", -1, ">= 0"),
    ("percent", -0.5, ">= 0"),
    ("percent", 100.01, "<= 100"),
    ("timestamp", -1.0, ">= 0"),
    ("step_index", 7, "< total_steps"),
    ("phase", "running", "must be one of"),
    ("phase", "PATTERN_GROUP", "must be one of"),
    ("status", "success", "must be one of"),
    ("status", None, "not null"),
    ("type", "not-progress", "must be 'progress'"),
    ("type", "Progress", "must be 'progress'"),
    ("execution_id", "", "must not be empty"),
    ("execution_id", 7, "not integer"),
    ("plate_id", None, "not null"),
    ("step_name", ["x"], "not array"),
    ("pattern", 3, "not integer"),
    ("percent", "28", "not string"),
]


@pytest.mark.parametrize(("field", "bad", "reason"), DEVIATIONS)
def test_each_deviation_is_refused_naming_the_field(field: str, bad: object, reason: str) -> None:
    with pytest.raises(SchemaError) as caught:
        ProgressUpdate.from_wire({**EXAMPLE, field: bad})
    error = caught.value
    assert error.path == f"progress.{field}"
    assert reason in error.reason
    assert f"progress.{field}" in str(error)
    assert repr(bad)[:10] in str(error)


def test_cross_field_rules_hold_in_python_construction_too() -> None:
    fields = {k: v for k, v in EXAMPLE.items() if k != "type"}
    with pytest.raises(SchemaError) as caught:
        ProgressUpdate(**{**fields, "completed": 60})
    assert caught.value.path == "progress.completed"
    with pytest.raises(SchemaError) as caught:
        ProgressUpdate(**{**fields, "step_index": 7})
    assert caught.value.path == "progress.step_index"


def test_from_wire_refuses_a_non_object() -> None:
    with pytest.raises(SchemaError) as caught:
        ProgressUpdate.from_wire([EXAMPLE])  # type: ignore[arg-type]
    assert caught.value.path == "progress"


_EVERY_TEXT = {"message": "m", "pattern": "p", "component": "c", "error": "e", "traceback": "t"}


@pytest.mark.parametrize("extra", [{}, {"message": "m", "pattern": "p", "error": "e"}, _EVERY_TEXT])
def test_with_seq_is_evolve_without_revalidation(extra: dict[str, str]) -> None:
    import attrs

    update = attrs.evolve(ProgressUpdate.from_wire(EXAMPLE), **extra)
    stamped = update.with_seq(41)
    expected = attrs.evolve(update, seq=41)
    assert stamped == expected
    assert stamped.to_wire() == expected.to_wire()
    assert hash(stamped) == hash(expected)
    assert update.seq == EXAMPLE["seq"]  # the original is untouched


@pytest.mark.parametrize("seq", [-1, 2**63, 1.0, True, "3", None])
def test_with_seq_refuses_a_bad_seq(seq: object) -> None:
    with pytest.raises(SchemaError, match="seq"):
        ProgressUpdate.from_wire(EXAMPLE).with_seq(seq)  # type: ignore[arg-type]
