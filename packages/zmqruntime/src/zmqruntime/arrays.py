"""Numpy arrays inside JSON values travel as binary frames (docs/protocol.md §4, "Arrays").

On send, `extract_arrays` replaces every `numpy.ndarray` in a JSON value by `{"$array": i}` and
returns one header `{"dtype": "<f8", "shape": [512, 512]}` and one frame per array. Frames above
`ZERO_COPY_THRESHOLD` are memoryviews over the array's own buffer (send them with
`copy=False`; do not mutate the array until the send completed). On receive, `read_array`
checks a header against its frame *before* allocating anything, and `restore_arrays` puts the
arrays back in place of their references.

Received arrays are `numpy.frombuffer` views of the received frames: zero-copy and read-only.
Call `.copy()` on one to get a writable array.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from zmqruntime.schema import (
    INT_MAX,
    MAX_JSON_DEPTH,
    MISSING,
    SchemaError,
    key_segment,
    type_error,
)

__all__ = [
    "ARRAY_KEY",
    "MAX_NDIM",
    "ZERO_COPY_THRESHOLD",
    "array_to_frame",
    "check_array",
    "dtype_problem",
    "extract_arrays",
    "parse_dtype",
    "read_array",
    "restore_arrays",
]

#: The key of an array reference inside a JSON value: `{"$array": 0}`.
ARRAY_KEY: Final = "$array"
#: Arrays with more bytes than this are sent without copying.
ZERO_COPY_THRESHOLD: Final = 64 * 1024
#: At most this many dimensions.
MAX_NDIM: Final = 32

#: Allowed itemsizes per numpy kind: bool, signed and unsigned ints, IEEE floats and complex.
#: `float128` ('f16') is refused: its memory layout differs between platforms.
_ALLOWED: Final[dict[str, frozenset[int]]] = {
    "b": frozenset({1}),
    "i": frozenset({1, 2, 4, 8}),
    "u": frozenset({1, 2, 4, 8}),
    "f": frozenset({4, 8}),
    "c": frozenset({8, 16}),
}
_DTYPE_TEXT = re.compile(r"([<>|])([biufc])(\d{1,2})")

Frame = bytes | memoryview


def dtype_problem(dtype: np.dtype[Any]) -> str | None:
    """Why this dtype cannot travel, or None when it can."""
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"structured dtype {dtype.str!r} is not allowed"
    sizes = _ALLOWED.get(dtype.kind)
    if sizes is None:
        return f"dtype {dtype.str!r} is not allowed (only bool, int, uint, float and complex)"
    if dtype.itemsize not in sizes:
        return f"dtype {dtype.str!r} has an itemsize that is not allowed"
    return None


def check_array(array: npt.NDArray[Any]) -> None:
    """Raise SchemaError unless this array may be sent (allowed dtype, at most MAX_NDIM dims)."""
    problem = dtype_problem(array.dtype)
    if problem is not None:
        raise SchemaError("", _describe(array), problem)
    if array.ndim > MAX_NDIM:
        raise SchemaError("", _describe(array), f"has more than {MAX_NDIM} dimensions")


def _describe(array: npt.NDArray[Any]) -> str:
    return f"ndarray(dtype={array.dtype.str!r}, shape={array.shape})"


def parse_dtype(text: object) -> np.dtype[Any]:
    """The numpy dtype of a header's `dtype` string, refusing everything outside the whitelist."""
    if type(text) is not str:
        raise type_error("a dtype string", text)
    match = _DTYPE_TEXT.fullmatch(text)
    if match is None:
        raise SchemaError("", text, "must be a dtype string like '<f8', '>i4', '|u1' or '|b1'")
    order, kind, size = match.group(1), match.group(2), int(match.group(3))
    if size not in _ALLOWED[kind]:
        raise SchemaError("", text, "this dtype is not allowed")
    if (size == 1) != (order == "|"):
        raise SchemaError("", text, "byte order must be '|' for 1-byte types, '<' or '>' otherwise")
    return np.dtype(text)


def array_to_frame(array: npt.NDArray[Any]) -> tuple[dict[str, Any], Frame]:
    """Header and frame of one array (C-contiguous; zero-copy above the threshold)."""
    check_array(array)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    header = {"dtype": array.dtype.str, "shape": list(array.shape)}
    if array.nbytes > ZERO_COPY_THRESHOLD:
        return header, array.reshape(-1).view(np.uint8).data
    return header, array.tobytes()


def extract_arrays(value: Any) -> tuple[Any, list[dict[str, Any]], list[Frame]]:
    """Replace each ndarray in a JSON value by a reference; return (value, headers, frames).

    Containers on the way to an array are copied, everything else is shared; a value without
    arrays is returned as is.
    """
    headers: list[dict[str, Any]] = []
    frames: list[Frame] = []

    def walk(item: Any) -> Any:
        if isinstance(item, np.ndarray):
            header, frame = array_to_frame(item)
            headers.append(header)
            frames.append(frame)
            return {ARRAY_KEY: len(frames) - 1}
        if isinstance(item, dict):
            copied: dict[str, Any] | None = None
            for key, child in item.items():
                new = walk(child)
                if new is not child:
                    if copied is None:
                        copied = dict(item)
                    copied[key] = new
            return item if copied is None else copied
        if isinstance(item, list | tuple):
            replaced = [walk(child) for child in item]
            if any(new is not old for new, old in zip(replaced, item, strict=True)):
                return replaced
            return item
        return item

    return walk(value), headers, frames


def read_array(header: object, frame: Frame) -> npt.NDArray[Any]:
    """The array a header describes, over `frame` without copying; SchemaError if they disagree.

    The frame length is checked against `prod(shape) * itemsize` before anything is allocated,
    so a header declaring an enormous shape costs nothing.
    """
    if type(header) is not dict:
        raise type_error("an object", header)
    for key in header:
        if key not in ("dtype", "shape"):
            raise SchemaError(key_segment(str(key)), header[key], "unknown field")
    if "dtype" not in header:
        raise SchemaError("dtype", MISSING, "required field is missing")
    if "shape" not in header:
        raise SchemaError("shape", MISSING, "required field is missing")
    try:
        dtype = parse_dtype(header["dtype"])
    except SchemaError as exc:
        raise exc.prefixed("dtype") from None
    shape = _parse_shape(header["shape"])
    expected = math.prod(shape) * dtype.itemsize
    actual = frame.nbytes if isinstance(frame, memoryview) else len(frame)
    if actual != expected:
        raise SchemaError(
            "shape",
            shape,
            f"declares {expected} bytes of {dtype.str} but its frame holds {actual} bytes",
        )
    array = np.frombuffer(frame, dtype=dtype).reshape(shape)
    array.flags.writeable = False  # a view of the received frame: never written through
    return array


def _parse_shape(shape: object) -> list[int]:
    if type(shape) is not list:
        raise type_error("an array of integers", shape).prefixed("shape")
    if len(shape) > MAX_NDIM:
        raise SchemaError("shape", shape, f"has more than {MAX_NDIM} dimensions")
    for index, dim in enumerate(shape):
        if type(dim) is not int:
            raise type_error("an integer", dim).prefixed(f"shape[{index}]")
        if not 0 <= dim <= INT_MAX:
            raise SchemaError(f"shape[{index}]", dim, "must be a non-negative 64-bit integer")
    return shape


def restore_arrays(value: Any, arrays: Sequence[npt.NDArray[Any]]) -> Any:
    """Put arrays in place of their `{"$array": i}` references, in place; return the value.

    Every array must be referenced exactly once; a reference must be an object with the single
    key "$array" whose value indexes `arrays`.
    """
    used = [False] * len(arrays)

    def resolve(ref: dict[str, Any]) -> npt.NDArray[Any]:
        if len(ref) != 1:
            raise SchemaError("", ref, f"an array reference has the single key {ARRAY_KEY!r}")
        index = ref[ARRAY_KEY]
        if type(index) is not int or not 0 <= index < len(arrays):
            raise SchemaError(
                ARRAY_KEY, index, f"must be the index of one of the {len(arrays)} array frames"
            )
        if used[index]:
            raise SchemaError(ARRAY_KEY, index, "this array frame is referenced twice")
        used[index] = True
        return arrays[index]

    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_JSON_DEPTH:
            raise SchemaError("", MISSING, f"nested deeper than {MAX_JSON_DEPTH} levels")
        if type(item) is dict:
            if ARRAY_KEY in item:
                return resolve(item)
            for key, child in item.items():
                if type(child) is dict or type(child) is list:
                    try:
                        new = walk(child, depth + 1)
                    except SchemaError as exc:
                        raise exc.prefixed(key_segment(key)) from None
                    if new is not child:
                        item[key] = new
        elif type(item) is list:
            for index, child in enumerate(item):
                if type(child) is dict or type(child) is list:
                    try:
                        new = walk(child, depth + 1)
                    except SchemaError as exc:
                        raise exc.prefixed(f"[{index}]") from None
                    if new is not child:
                        item[index] = new
        return item

    result = walk(value, 0)
    for index, was_used in enumerate(used):
        if not was_used:
            raise SchemaError("", MISSING, f"array frame {index} is not referenced by the body")
    return result
