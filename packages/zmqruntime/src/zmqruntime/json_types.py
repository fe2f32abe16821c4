"""Free-form JSON values in message fields: handler params, results, error details.

`JsonValue` and `JsonObject` are annotations for `WireModel` fields. Their values are built
from `None`, `bool`, `int`, finite `float`, `str`, lists (tuples are accepted in Python and sent
as lists) and dicts with string keys, nested at most `MAX_JSON_DEPTH` deep, plus numpy arrays of
an allowed dtype (they travel as binary frames, see `arrays`). The key `"$array"` is reserved
for array references. Declare such fields with `attrs.field(eq=json_eq_key)` so messages holding
arrays compare by value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeAlias

import numpy as np

from zmqruntime.arrays import ARRAY_KEY, check_array
from zmqruntime.schema import MAX_JSON_DEPTH, SchemaError, WireType, key_segment, type_error

__all__ = [
    "JsonObject",
    "JsonValue",
    "check_json_value",
    "holds_arrays",
    "json_eq_key",
    "strict_json_loads",
    "to_json_value",
]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = _DECODER.scan_once  # type: ignore[attr-defined]


def strict_json_loads(text: str) -> Any:
    """`json.loads` that refuses `NaN`, `Infinity` and `-Infinity` (ValueError)."""
    # The decoder's own scanner on text without surrounding whitespace (what encoders write);
    # anything else, errors included, takes the full `decode` for its exact messages.
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    if end != len(text):
        return _DECODER.decode(text)
    return value


def _leaf(value: Any) -> None:
    """Check a value that is not a container; exact JSON types are handled by the caller."""
    if isinstance(value, np.ndarray):
        check_array(value)
    elif isinstance(value, np.generic):
        raise SchemaError("", value, "numpy scalars are not JSON values; convert with .item()")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(
                "", value, "must be a finite number (NaN and infinities are not JSON)"
            )
    elif not isinstance(value, str | int):  # bool is an int; str/int subclasses dump as such
        raise SchemaError("", value, f"a {type(value).__qualname__} is not a JSON value")


def _walk(value: Any, depth: int) -> None:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if value - value != 0.0:  # NaN or an infinity, without a function call
            raise SchemaError(
                "", value, "must be a finite number (NaN and infinities are not JSON)"
            )
        return
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, dict)):
        if depth >= MAX_JSON_DEPTH:
            raise SchemaError("", "{...}", f"nested deeper than {MAX_JSON_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise SchemaError("", key, "object keys must be strings")
            if key == ARRAY_KEY:
                raise SchemaError(key, item, f"the key {ARRAY_KEY!r} is reserved for arrays")
            try:
                _walk(item, depth + 1)
            except SchemaError as exc:
                raise exc.prefixed(key_segment(key)) from None
        return
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        if depth >= MAX_JSON_DEPTH:
            raise SchemaError("", "[...]", f"nested deeper than {MAX_JSON_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except SchemaError as exc:
                raise exc.prefixed(f"[{index}]") from None
        return
    _leaf(value)


def check_json_value(value: Any) -> Any:
    """Validate a free-form JSON value (arrays allowed); return it unchanged."""
    _walk(value, 0)
    return value


def _check_json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise type_error("an object", value)
    _walk(value, 0)
    return value


def to_json_value(value: Any) -> Any:
    """A copy of `value` made JSON-ready: numpy scalars become Python numbers, tuples lists.

    Useful for handler results built with numpy. Arrays are kept (they travel as frames).
    Raises SchemaError for anything that still is not a JSON value.
    """

    def convert(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        if isinstance(item, dict):
            return {key: convert(child) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [convert(child) for child in item]
        return item

    return check_json_value(convert(value))


_PLAIN: Final = frozenset({str, int, float, bool, type(None)})


def holds_arrays(value: Any) -> bool:
    """Whether a (valid) free-form JSON value holds a numpy array anywhere; cheap when it
    holds none, so the codec only walks a body for arrays when there are some."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif isinstance(value, np.ndarray):
        return True
    elif isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    return any(type(item) not in _PLAIN and holds_arrays(item) for item in items)


def json_eq_key(value: Any) -> Any:
    """A hashable key equal for equal JSON values; arrays compare by dtype, shape and bytes."""
    if isinstance(value, dict):
        return ("{}", tuple(sorted((key, json_eq_key(item)) for key, item in value.items())))
    if isinstance(value, list | tuple):
        return ("[]", tuple(json_eq_key(item) for item in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    return value


_JSON_VALUE = WireType(
    parse=check_json_value, check=check_json_value, may_hold_arrays=True, holds_arrays=holds_arrays
)
_JSON_OBJECT = WireType(
    parse=_check_json_object,
    check=_check_json_object,
    may_hold_arrays=True,
    holds_arrays=holds_arrays,
)

#: Any JSON value (numpy arrays allowed), for free-form fields such as a handler's result.
JsonValue: TypeAlias = Annotated[Any, _JSON_VALUE]
#: A JSON object (numpy arrays allowed inside), for free-form fields such as handler params.
JsonObject: TypeAlias = Annotated[dict[str, Any], _JSON_OBJECT]
