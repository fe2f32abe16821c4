"""Arrays in JSON values: extraction leaves messages untouched, headers are checked exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.arrays import (
    ZERO_COPY_THRESHOLD,
    array_to_frame,
    dtype_problem,
    extract_arrays,
    read_array,
    restore_arrays,
)
from zmqruntime.messages import Submit
from zmqruntime.schema import SchemaError
from zmqruntime.strategies import ALLOWED_DTYPES, arrays, json_values


@settings(max_examples=60)
@given(value=json_values(with_arrays=True))
def test_extract_then_restore_gives_the_value_back_and_leaves_the_input_alone(value: Any) -> None:
    before = repr(value)
    wire, headers, frames = extract_arrays(value)
    assert repr(value) == before  # the message's own value is never modified
    assert len(headers) == len(frames)
    decoded = [read_array(h, bytes(f)) for h, f in zip(headers, frames, strict=True)]
    restored = restore_arrays(wire, decoded)
    assert Submit(handler="h", params={"v": restored}) == Submit(handler="h", params={"v": value})


@settings(max_examples=60)
@given(array=arrays())
def test_every_allowed_array_survives_a_frame(array: np.ndarray[Any, Any]) -> None:
    header, frame = array_to_frame(array)
    back = read_array(header, frame)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()
    assert not back.flags.writeable


def test_the_whitelist() -> None:
    for text in ALLOWED_DTYPES:
        assert dtype_problem(np.dtype(text)) is None
    for bad in ("O", "U3", "S3", "V8", "M8[s]", "m8[s]", "f2", "i4,f8", "c32"):
        try:
            dtype = np.dtype(bad)
        except TypeError:
            continue
        assert dtype_problem(dtype) is not None, bad


@pytest.mark.parametrize(
    "array",
    [np.array([object()]), np.array(["text"]), np.zeros(2, dtype="i4,f8"), np.zeros(1, "f2")],
)
def test_a_message_cannot_hold_an_array_of_a_refused_dtype(array: np.ndarray[Any, Any]) -> None:
    with pytest.raises(SchemaError) as caught:
        Submit(handler="h", params={"data": [array]})
    assert caught.value.path == "submit.params.data[0]"


def test_zero_copy_above_the_threshold_only() -> None:
    small = np.zeros(ZERO_COPY_THRESHOLD // 8, dtype="<f8")  # exactly 64 KiB: copied
    big = np.zeros(ZERO_COPY_THRESHOLD // 8 + 1, dtype="<f8")
    assert isinstance(array_to_frame(small)[1], bytes)
    frame = array_to_frame(big)[1]
    assert isinstance(frame, memoryview)
    assert np.shares_memory(np.frombuffer(frame, np.uint8), big)


def test_a_non_contiguous_array_is_sent_c_contiguous() -> None:
    fortran = np.asfortranarray(np.arange(20_000, dtype="<i8").reshape(100, 200))
    header, frame = array_to_frame(fortran)
    assert header == {"dtype": "<i8", "shape": [100, 200]}
    assert np.array_equal(read_array(header, frame), fortran)


@settings(max_examples=30)
@given(shape=st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=4))
def test_read_array_needs_the_exact_byte_count(shape: list[int]) -> None:
    expected = int(np.prod(shape, dtype=object)) * 4
    frame = b"\0" * 12
    if expected == 12:
        assert read_array({"dtype": "<f4", "shape": shape}, frame).shape == tuple(shape)
    else:
        with pytest.raises(SchemaError, match="declares"):
            read_array({"dtype": "<f4", "shape": shape}, frame)
