"""Strict schemas: every message round-trips, every single-field deviation is refused by name."""

from __future__ import annotations

import enum
import json
import math
import typing
from typing import Annotated, Any, Literal

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.connection import ConnectionInfo
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.json_types import to_json_value
from zmqruntime.messages import (
    MESSAGE_TYPES,
    ErrorCode,
    ErrorInfo,
    ErrorReply,
    ExecutionRecord,
    ServerCounters,
    StatusReply,
    Submit,
)
from zmqruntime.progress import Phase, ProgressUpdate
from zmqruntime.schema import (
    MISSING,
    Ge,
    Gt,
    Le,
    MinLen,
    SchemaError,
    WireModel,
    WireType,
    join_path,
    key_segment,
)
from zmqruntime.strategies import MESSAGE_STRATEGIES, execution_records, progress_updates
from zmqruntime.testing import example_progress

connection_infos = st.builds(
    ConnectionInfo,
    control=st.just("tcp://127.0.0.1:40001"),
    events=st.just("tcp://127.0.0.1:40002"),
    progress=st.sampled_from(["tcp://127.0.0.1:40003", "ipc:///tmp/zr.sock"]),
    key=st.binary(min_size=16, max_size=64),
    server_epoch=st.text(min_size=1, max_size=8),
    pid=st.integers(min_value=0, max_value=2**22),
)

STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    **MESSAGE_STRATEGIES,
    ConnectionInfo: connection_infos,
    ExecutionRecord: execution_records(),
    ErrorInfo: st.builds(ErrorInfo, code=st.sampled_from(ErrorCode), message=st.text()),
}
CLASSES = sorted(STRATEGIES, key=lambda cls: cls.__name__)


def field_names(cls: type) -> list[str]:
    return [a.name for a in attrs.fields(cls)]


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_from_wire_of_to_wire_is_identity(cls: type[WireModel], data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[cls])
    wire = message.to_wire()
    assert cls.from_wire(wire) == message
    # ... also through real JSON text, so to_wire holds nothing JSON cannot carry
    assert cls.from_wire(json.loads(json.dumps(wire, allow_nan=False))) == message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=10)
@given(data=st.data())
def test_to_wire_emits_exactly_the_schema(cls: type[WireModel], data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[cls]).to_wire()
    names = set(field_names(cls))
    if cls is ProgressUpdate:
        optional = {"pattern", "component", "message", "error", "traceback"}
        assert names - optional <= set(wire) <= names
        assert all(wire[name] is not None for name in optional & set(wire))
    else:
        assert set(wire) == names


def test_every_envelope_type_has_a_class_with_that_type() -> None:
    for kind, cls in MESSAGE_TYPES.items():
        assert kind == cls.TYPE
        assert kind == cls.SCHEMA_NAME


# -- single-field mutations -------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def _unwrap(hint: Any) -> tuple[Any, list[object], bool]:
    """(base type, Annotated rules, optional?) of a field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, optional = args[0], True
    meta: list[object] = []
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
    return hint, meta, optional


def wrong_values(hint: Any) -> list[object]:
    """Values of the wrong type or out of range for a field of this type."""
    base, meta, optional = _unwrap(hint)
    if any(isinstance(m, WireType) for m in meta):  # free-form JSON
        bad: list[object] = [NAN, INF, -INF, {"k": [1, NAN]}, {"$array": 0}, {"a": {"$array": 0}}]
        if typing.get_origin(base) is dict:
            bad += [[], "x", 1, True, None]
        return bad
    if base is int:
        bad = [True, False, 1.0, 1.5, "1", [], {}, NAN]
    elif base is float:
        bad = [True, "1.0", NAN, INF, -INF, [], {}]
    elif base is str:
        bad = [1, 1.5, True, [], {}]
    elif base is bytes:
        bad = [1, "zz", "ABCD", "abc", []]
    elif base is bool:
        bad = [0, 1, 1.0, "true"]
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        bad = ["not-a-member", 1, True, ""]
    elif typing.get_origin(base) is Literal:
        bad = ["something-else", 1]
    elif typing.get_origin(base) is tuple:
        bad = ["x", 1, {}, True]
    elif isinstance(base, type) and issubclass(base, WireModel):
        bad = ["x", 1, [], True]
    else:
        raise AssertionError(f"no wrong values for {hint!r}")
    for rule in meta:
        if isinstance(rule, Ge):
            bad.append(int(rule.bound) - 1 if base is int else rule.bound - 0.5)
        elif isinstance(rule, Le):
            bad.append(int(rule.bound) + 1 if base is int else rule.bound + 0.5)
        elif isinstance(rule, Gt):
            bad.append(rule.bound)
        elif isinstance(rule, MinLen) and rule.length > 0:
            bad.append("" if base is str else "00")
    if not optional:
        bad.append(None)
    return bad


def _assert_names(error: SchemaError, schema: str, field: str) -> None:
    expected = join_path(schema, key_segment(field))
    assert error.path == expected or error.path.startswith((expected + ".", expected + "[")), (
        error.path,
        expected,
    )
    assert expected in str(error)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_every_single_field_mutation_is_rejected_by_name(
    cls: type[WireModel], data: st.DataObject
) -> None:
    message = data.draw(STRATEGIES[cls])
    wire = message.to_wire()
    hints = typing.get_type_hints(cls, include_extras=True)
    required = [
        a.name
        for a in attrs.fields(cls)
        if a.default is attrs.NOTHING or a.metadata.get("zmqruntime.wire_required")
    ]
    mutations = (
        ["add"] + (["remove"] if required else []) + (["replace"] if field_names(cls) else [])
    )
    mutation = data.draw(st.sampled_from(mutations))
    if mutation == "add":
        extra = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in wire))
        wire[extra] = data.draw(st.none() | st.integers() | st.text())
        field = extra
    elif mutation == "remove":
        field = data.draw(st.sampled_from(required))
        del wire[field]
    else:
        field = data.draw(st.sampled_from(field_names(cls)))
        wire[field] = data.draw(st.sampled_from(wrong_values(hints[field])))
    with pytest.raises(SchemaError) as caught:
        cls.from_wire(wire)
    _assert_names(caught.value, cls.SCHEMA_NAME, field)
    if mutation == "remove":
        assert caught.value.value is MISSING


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=20)
@given(data=st.data())
def test_python_construction_refuses_the_same_values(
    cls: type[WireModel], data: st.DataObject
) -> None:
    message = data.draw(STRATEGIES[cls])
    hints = typing.get_type_hints(cls, include_extras=True)
    if not field_names(cls):
        return
    field = data.draw(st.sampled_from(field_names(cls)))
    bad = data.draw(st.sampled_from(wrong_values(hints[field])))
    with pytest.raises(SchemaError) as caught:
        attrs.evolve(message, **{field: bad})
    _assert_names(caught.value, cls.SCHEMA_NAME, field)


# -- specific rules ---------------------------------------------------------------------------


def test_a_float_field_reads_an_integer_as_a_float() -> None:
    update = ProgressUpdate.from_wire(example_progress(percent=28, timestamp=1700000000))
    assert type(update.percent) is float
    assert update.percent == 28.0
    assert type(update.timestamp) is float


def test_python_construction_normalises_python_types_only() -> None:
    update = ProgressUpdate(
        **{**example_progress(), "phase": "init", "total": np.int64(50), "percent": 3}
    )
    assert update.phase is Phase.INIT
    assert type(update.total) is int
    assert type(update.percent) is float
    assert ProgressUpdate.from_wire(update.to_wire()) == update


def test_nested_errors_name_the_whole_path() -> None:
    wire = {
        "server_epoch": "e",
        "uptime": 1.0,
        "pid": 1,
        "running": [
            {"execution_id": "a", "handler": "h", "started_at": 1.0},
            {"execution_id": "b", "handler": "h", "started_at": 1.0, "worker_pid": -3},
        ],
    }
    from zmqruntime.messages import ServerStatus

    with pytest.raises(SchemaError) as caught:
        ServerStatus.from_wire(wire)
    assert caught.value.path == "server_status.running[1].worker_pid"
    assert caught.value.value == -3


def test_free_form_json_errors_name_the_path_inside_the_value() -> None:
    with pytest.raises(SchemaError) as caught:
        Submit.from_wire({"handler": "h", "params": {"x": [0, {"y z": NAN}]}})
    assert caught.value.path == "submit.params.x[1]['y z']"


def test_schema_error_text_names_path_reason_and_truncated_value() -> None:
    with pytest.raises(SchemaError) as caught:
        Submit.from_wire({"handler": "h", "params": ["x" * 1000]})
    text = str(caught.value)
    assert text.startswith("submit.params: expected an object, not array")
    assert "'xxx" in text
    assert len(text) < 300
    assert isinstance(caught.value, ValueError)


def test_deeply_nested_json_is_refused_without_recursion_error() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(SchemaError, match="nested deeper"):
        Submit(handler="h", params={"v": value})


def test_submit_refuses_compile_only_with_an_artifact() -> None:
    with pytest.raises(SchemaError) as caught:
        Submit.from_wire(
            {"handler": "h", "params": {}, "compile_only": True, "compile_artifact_id": "a"}
        )
    assert caught.value.path == "submit.compile_artifact_id"


@pytest.mark.parametrize(
    ("status", "result", "error", "path"),
    [
        (ExecutionStatus.RUNNING, {"x": 1}, None, "result"),
        (ExecutionStatus.FAILED, None, None, "error"),
        (ExecutionStatus.CANCELLED, None, None, "error"),
        (ExecutionStatus.COMPLETE, None, {"code": "internal", "message": "m"}, "error"),
        (ExecutionStatus.QUEUED, None, {"code": "internal", "message": "m"}, "error"),
        (ExecutionStatus.FAILED, [1], {"code": "handler_error", "message": "m"}, "result"),
    ],
)
def test_execution_record_keeps_status_result_and_error_together(
    status: ExecutionStatus, result: Any, error: Any, path: str
) -> None:
    wire = {
        "execution_id": "x",
        "handler": "h",
        "status": str(status),
        "submitted_at": 1.0,
        "result": result,
        "error": error,
    }
    with pytest.raises(SchemaError) as caught:
        ExecutionRecord.from_wire(wire)
    assert caught.value.path == f"execution_record.{path}"


def test_execution_record_error_codes_are_checked() -> None:
    wire = {
        "execution_id": "x",
        "handler": "h",
        "status": "failed",
        "submitted_at": 1.0,
        "error": {"code": "oops", "message": "m"},
    }
    with pytest.raises(SchemaError) as caught:
        ExecutionRecord.from_wire(wire)
    assert caught.value.path == "execution_record.error.code"


@settings(max_examples=20)
@given(record=execution_records(), update=progress_updates())
def test_status_reply_progress_must_belong_to_its_execution(
    record: ExecutionRecord, update: ProgressUpdate
) -> None:
    if update.execution_id == record.execution_id:
        return
    with pytest.raises(SchemaError) as caught:
        StatusReply(execution=record, latest_progress=update, seq=0)
    assert caught.value.path == "status_reply.latest_progress.execution_id"
    with pytest.raises(SchemaError) as caught:
        StatusReply(execution=record, axes=(update,), seq=0)
    assert caught.value.path == "status_reply.axes[0].execution_id"


def test_error_reply_and_counters_defaults() -> None:
    assert ErrorReply.from_wire({"code": "busy", "message": "m"}).details == {}
    assert ServerCounters().to_wire()["submitted"] == 0


def test_integers_must_fit_64_bits() -> None:
    with pytest.raises(SchemaError, match="64-bit"):
        ProgressUpdate.from_wire(example_progress(seq=2**63))


def test_to_json_value_converts_numpy_scalars() -> None:
    value = to_json_value({"m": np.float32(1.5), "n": (np.int64(2), True), "a": np.zeros(2)})
    assert value["m"] == 1.5
    assert type(value["m"]) is float
    assert value["n"] == [2, True]
    assert type(value["n"][0]) is int
    with pytest.raises(SchemaError, match=r"\.item\(\)"):
        Submit(handler="h", params={"x": np.float32(1)})
    with pytest.raises(SchemaError, match="not a JSON value"):
        Submit(handler="h", params={"x": {1, 2}})
    with pytest.raises(SchemaError, match="keys must be strings"):
        Submit(handler="h", params={"x": {1: 2}})


def test_messages_holding_arrays_compare_and_hash_by_value() -> None:
    a = Submit(handler="h", params={"x": np.arange(4.0)})
    b = Submit(handler="h", params={"x": np.arange(4.0)})
    c = Submit(handler="h", params={"x": np.arange(4.0).astype("<f4")})
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert math.isfinite(a.params["x"].sum())
