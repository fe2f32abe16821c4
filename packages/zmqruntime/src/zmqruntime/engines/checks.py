"""Validation of policy settings, shared by the callback policies and the engines.

The engines re-check every setting they read from a policy, because a hand-written
policy subclass can return anything; the callback policies check at construction so the
error points at the line that built the policy. Errors name the setting and the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

__all__ = [
    "as_validator",
    "check_callable",
    "check_flag",
    "check_mapping",
    "check_optional_callable",
    "check_optional_count",
    "check_optional_seconds",
    "check_seconds",
]

T = TypeVar("T")


def check_seconds(name: str, value: object) -> float:
    """A finite duration > 0 (a bool is not a number)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: expected a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_optional_seconds(name: str, value: object) -> float | None:
    """None (no limit) or a finite duration > 0."""
    return None if value is None else check_seconds(name, value)


def check_flag(name: str, value: object) -> bool:
    """Exactly True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def check_count(name: str, value: object) -> int:
    """An int >= 1 (a bool is not a count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return value


def check_optional_count(name: str, value: object) -> int | None:
    """None (unbounded) or an int >= 1 (a bool is not a count)."""
    if value is None:
        return None
    try:
        return check_count(name, value)
    except ValueError:
        raise ValueError(f"{name}: expected None or an int >= 1, got {value!r}") from None


def check_callable(name: str, value: object) -> object:
    """Something callable."""
    if not callable(value):
        raise ValueError(f"{name}: expected a callable, got {value!r}")
    return value


def check_optional_callable(name: str, value: object) -> object:
    """None or something callable."""
    return None if value is None else check_callable(name, value)


def check_mapping(name: str, value: object) -> Mapping[Any, Any]:
    """A mapping (e.g. a dict)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {value!r}")
    return value


def as_validator(check: Callable[[str, Any], object]) -> Callable[[Any, Any, Any], None]:
    """Wrap a `check_*` function as an attrs validator naming the field."""

    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.name, value)

    return validate
