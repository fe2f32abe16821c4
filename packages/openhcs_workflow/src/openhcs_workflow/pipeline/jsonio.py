"""Strict readers for JSON input (params, configs, manifests, artifacts) and canonical hashing.

Every reader takes the path of the value being read (`config.wells[1]`) and the exception type
to raise, so a bad value always comes back as one clear error naming where it was and what it
was. The rules follow the wire protocol: a bool is not a number, an integer field rejects 1.0,
floats must be finite, unknown object fields are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from typing import TypeAlias

import attrs

__all__ = ["JSONObject", "JSONValue", "JsonReader", "canonical_hash", "describe"]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
JSONObject: TypeAlias = dict[str, JSONValue]


def describe(value: object) -> str:
    """A short, unambiguous rendering of a bad value: its JSON type and its repr."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    kind = "null" if value is None else names.get(type(value), type(value).__name__)
    if isinstance(value, dict):
        kind = "object"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if value is None else f"{kind} {text}"


def canonical_hash(value: JSONValue) -> str:
    """SHA-256 hex digest of the canonical JSON text of `value` (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@attrs.frozen(slots=True)
class JsonReader:
    """Reads JSON values strictly, raising `error(message)` with the value's path on a mismatch."""

    error: type[Exception]

    def fail(self, where: str, value: object, expected: str) -> Exception:
        """The exception for `where` holding `value` instead of `expected`."""
        return self.error(f"{where}: expected {expected}, got {describe(value)}")

    def obj(
        self,
        value: object,
        where: str,
        *,
        required: Collection[str] = (),
        optional: Collection[str] = (),
    ) -> Mapping[str, object]:
        """A JSON object with exactly the `required` keys and any of the `optional` ones."""
        if not isinstance(value, Mapping):
            raise self.fail(where, value, "an object")
        for key in value:
            if not isinstance(key, str):
                raise self.error(f"{where}: object keys must be strings, got {describe(key)}")
            if key not in required and key not in optional:
                allowed = ", ".join(sorted([*required, *optional])) or "none"
                raise self.error(f"{where}: unknown field {key!r} (allowed: {allowed})")
        for key in required:
            if key not in value:
                raise self.error(f"{where}: missing required field {key!r}")
        return value

    def free_obj(self, value: object, where: str) -> Mapping[str, object]:
        """A JSON object with free keys (still strings)."""
        return self.obj(value, where, optional=value.keys() if isinstance(value, Mapping) else ())

    def items(self, value: object, where: str) -> list[object]:
        """A JSON list (a tuple is accepted, as Python callers build those)."""
        if not isinstance(value, list | tuple):
            raise self.fail(where, value, "a list")
        return list(value)

    def text(self, value: object, where: str, *, non_empty: bool = True) -> str:
        """A string, non-empty unless told otherwise."""
        if not isinstance(value, str):
            raise self.fail(where, value, "a string")
        if non_empty and not value:
            raise self.error(f"{where}: must not be empty")
        return value

    def integer(self, value: object, where: str, *, minimum: int | None = None) -> int:
        """An integer: a bool or a float (even 1.0) is refused."""
        if type(value) is not int:
            raise self.fail(where, value, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(f"{where}: {value} is below the minimum {minimum}")
        return value

    def number(self, value: object, where: str) -> float:
        """A finite number; an integer is read as a float, a bool is refused."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, value, "a number")
        result = float(value)
        if not math.isfinite(result):
            raise self.error(f"{where}: must be finite, got {value!r}")
        return result

    def boolean(self, value: object, where: str) -> bool:
        """A boolean (0 and 1 are refused)."""
        if not isinstance(value, bool):
            raise self.fail(where, value, "a boolean")
        return value

    def integers(
        self, value: object, where: str, *, minimum: int | None = None, distinct: bool = True
    ) -> tuple[int, ...]:
        """A list of integers, distinct unless told otherwise."""
        values = tuple(
            self.integer(item, f"{where}[{i}]", minimum=minimum)
            for i, item in enumerate(self.items(value, where))
        )
        if distinct:
            self._distinct(values, where)
        return values

    def texts(self, value: object, where: str) -> tuple[str, ...]:
        """A list of distinct non-empty strings."""
        items = tuple(
            self.text(item, f"{where}[{i}]") for i, item in enumerate(self.items(value, where))
        )
        self._distinct(items, where)
        return items

    def _distinct(self, items: tuple[object, ...], where: str) -> None:
        seen: set[object] = set()
        for i, item in enumerate(items):
            if item in seen:
                raise self.error(f"{where}[{i}]: duplicate value {item!r}")
            seen.add(item)
