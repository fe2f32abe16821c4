"""JSON values as the workflow handles them: validated, copied, canonically encoded.

Pipelines and configs travel to the server as JSON parameters, so they are checked once, where
they enter the workflow, with an error that names the field path and the bad value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

__all__ = ["JSONObject", "JSONValue", "canonical_json", "json_copy", "json_object_copy"]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"


def json_copy(value: object, path: str) -> JSONValue:
    """A deep copy of `value` as plain JSON (tuples become lists); `ValueError` naming the path.

    Refused: non-string keys, NaN and infinities, and anything that is not None, bool, int,
    float, str, a sequence or a mapping.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return value
    if isinstance(value, Mapping):
        out: JSONObject = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: expected string keys, got {key!r}")
            out[key] = json_copy(item, f"{path}.{key}")
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [json_copy(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{path}: expected a JSON value, got {type(value).__name__} {value!r}")


def json_object_copy(value: object, path: str) -> JSONObject:
    """Like `json_copy`, but the value must be a JSON object."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected an object, got {type(value).__name__} {value!r}")
    copied = json_copy(value, path)
    assert isinstance(copied, dict)
    return copied


def canonical_json(value: JSONValue) -> str:
    """Sorted-key, whitespace-free JSON: equal values give equal text (for signatures)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
