"""The policy boundary of `IntervalSnapshotPoller`: what to fetch, how to copy it, whom to tell.

Subclass `IntervalSnapshotPollerPolicyABC`, or build a `CallbackIntervalSnapshotPollerPolicy`
from plain functions.
"""

from __future__ import annotations

import abc
import copy
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

__all__ = [
    "CallbackIntervalSnapshotPollerPolicy",
    "IntervalSnapshotPollerPolicyABC",
    "validate_poll_interval",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def validate_poll_interval(name: str, value: object) -> float:
    """Return `value` as a float if it is a finite number of seconds above zero, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0 seconds, got {value!r}")
    return float(value)


class IntervalSnapshotPollerPolicyABC(abc.ABC, Generic[T]):
    """What an `IntervalSnapshotPoller` fetches and whom it tells.

    `fetch_snapshot` may be a plain function (run off the GUI thread by the poller's fetch
    runner or thread driver) or return an awaitable (drive the poller with the asyncio driver).
    The hooks run on the poller's dispatcher thread; an exception they raise is logged and
    polling goes on.
    """

    @abc.abstractmethod
    def fetch_snapshot(self) -> T | Awaitable[T]:
        """Fetch the current snapshot (may block; may be `async`)."""

    @abc.abstractmethod
    def clone_snapshot(self, snapshot: T) -> T:
        """An independent copy of `snapshot`; callers get copies, never the poller's value."""

    @property
    @abc.abstractmethod
    def poll_interval_seconds(self) -> float:
        """Quiet time between the end of one fetch and the start of the next."""

    def on_snapshot_changed(self, snapshot: T) -> None:
        """Called with a copy of a snapshot that differs from the last one reported."""

    def on_poll_error(self, error: Exception) -> None:
        """Called with the exception a fetch raised; the default logs it."""
        logger.warning("snapshot fetch failed: %r", error)


def _interval_validator(
    _instance: object, attribute: attrs.Attribute[float], value: object
) -> None:
    validate_poll_interval(attribute.name, value)


_CALLABLE: Callable[[Any, attrs.Attribute[Any], Any], Any] = attrs.validators.is_callable()


def _log_poll_error(error: Exception) -> None:
    logger.warning("snapshot fetch failed: %r", error)


def _ignore_snapshot(_snapshot: Any) -> None:
    return None


@attrs.frozen(kw_only=True)
class CallbackIntervalSnapshotPollerPolicy(IntervalSnapshotPollerPolicyABC[T]):
    """A poller policy assembled from functions.

    `clone_snapshot_fn` defaults to `copy.deepcopy`; pass an identity function when snapshots
    are immutable (frozen attrs values, tuples). With an `async` fetch function, spell the type
    (`CallbackIntervalSnapshotPollerPolicy[Info](...)`): a checker cannot infer it from
    `T | Awaitable[T]`. Hook return values are ignored.
    """

    fetch_snapshot_fn: Callable[[], T | Awaitable[T]] = attrs.field(validator=_CALLABLE)
    poll_interval_seconds_value: float = attrs.field(validator=_interval_validator)
    clone_snapshot_fn: Callable[[T], T] = attrs.field(default=copy.deepcopy, validator=_CALLABLE)
    on_snapshot_changed_fn: Callable[[T], object] = attrs.field(
        default=_ignore_snapshot, validator=_CALLABLE
    )
    on_poll_error_fn: Callable[[Exception], object] = attrs.field(
        default=_log_poll_error, validator=_CALLABLE
    )

    def fetch_snapshot(self) -> T | Awaitable[T]:
        return self.fetch_snapshot_fn()

    def clone_snapshot(self, snapshot: T) -> T:
        return self.clone_snapshot_fn(snapshot)

    @property
    def poll_interval_seconds(self) -> float:
        return self.poll_interval_seconds_value

    def on_snapshot_changed(self, snapshot: T) -> None:
        self.on_snapshot_changed_fn(snapshot)

    def on_poll_error(self, error: Exception) -> None:
        self.on_poll_error_fn(error)
