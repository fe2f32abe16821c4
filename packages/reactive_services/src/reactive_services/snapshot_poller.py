"""`IntervalSnapshotPoller`: background polling of one snapshot, safe to drive from a GUI timer.

Guarantees (invariant 6 of the design):
- at most one fetch is in flight, whoever drives the poller (`tick()`, a driver, or both);
- `reset()` bumps a generation: a fetch started before it never delivers, and once `reset()`
  returns no callback carrying pre-reset data is running or will start;
- `on_snapshot_changed` fires only for a snapshot unequal (`==`) to the last one reported
  (the first snapshot after construction or `reset()` is always reported);
- hooks run through the `Dispatcher` and receive clones; the poller's own value never leaks;
- a failing fetch goes to `on_poll_error` and polling goes on; a failing hook is logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Generic, TypeVar, cast

from reactive_services.dispatch import Dispatcher, ImmediateDispatcher
from reactive_services.fetch_runners import FetchRunner, ThreadPerFetchRunner
from reactive_services.snapshot_policy import (
    IntervalSnapshotPollerPolicyABC,
    validate_poll_interval,
)

__all__ = ["IntervalSnapshotPoller"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
P = TypeVar("P")

_UNSET: Final = object()
_ASYNC_FETCH_IN_THREAD = (
    "fetch_snapshot returned an awaitable; drive async fetches with AsyncioPollerDriver"
)


class _Ticket:
    """One started fetch; compared by identity, tagged with the generation it belongs to."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


def _equal(old: object, new: object) -> bool:
    """`old == new`; a comparison that raises (or is ambiguous) counts as a change."""
    if old is new:
        return True
    try:
        return bool(old == new)
    except Exception:
        return False


def _discard(awaitable: Awaitable[object]) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


class IntervalSnapshotPoller(Generic[T]):
    """Polls `policy.fetch_snapshot()` at most once per interval, one fetch at a time.

    Drive it one of three ways:
    - `tick()` from a host timer (a 60 Hz QTimer, say): cheap when nothing is due; when a fetch
      is due it hands the blocking fetch to `runner` (default: `ThreadPerFetchRunner`, one
      owned non-daemon thread per fetch, joined by `close()`), so the timer thread never blocks;
    - `ThreadPollerDriver` (one owned thread fetching inline);
    - `AsyncioPollerDriver` (a task; `async` fetches supported).

    `clock` (default `time.monotonic`) is injectable for tests. The interval is the quiet time
    from the end of one fetch to the start of the next; it is read from the policy after each
    fetch. Every method is thread-safe.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_delivery_lock",
        "_dispatcher",
        "_gate",
        "_generation",
        "_has_snapshot",
        "_inflight",
        "_interval",
        "_last_reported",
        "_lock",
        "_next_due",
        "_policy",
        "_runner",
        "_snapshot",
        "_wake_listeners",
    )

    def __init__(
        self,
        policy: IntervalSnapshotPollerPolicyABC[T],
        *,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        runner: FetchRunner | None = None,
    ) -> None:
        self._policy = policy
        self._dispatcher: Dispatcher = (
            dispatcher if dispatcher is not None else ImmediateDispatcher()
        )
        self._clock = clock
        self._runner: FetchRunner = runner if runner is not None else ThreadPerFetchRunner()
        self._interval = validate_poll_interval(
            "policy.poll_interval_seconds", policy.poll_interval_seconds
        )
        self._lock = threading.Lock()
        # Held while a hook runs and while reset()/close() bump the generation, so a hook that
        # passed its generation check finishes before reset() returns.
        self._delivery_lock = threading.RLock()
        self._generation = 0
        self._snapshot: T | None = None
        self._has_snapshot = False
        self._last_reported: object = _UNSET
        self._inflight: _Ticket | None = None
        self._next_due = -math.inf
        # Earliest clock value at which tick() may start a fetch; +inf while one is in flight
        # or after close(). Read without the lock by tick()'s fast path.
        self._gate = -math.inf
        self._closed = False
        self._wake_listeners: list[Callable[[], None]] = []

    # -- host-facing API ---------------------------------------------------------------------

    def tick(self) -> bool:
        """Start a fetch if none is in flight and the interval has passed; True if started."""
        gate = self._gate
        if gate == math.inf or self._clock() < gate:
            return False
        ticket = self._begin_fetch()
        if ticket is None:
            return False
        try:
            self._runner.start(functools.partial(self._run_fetch, ticket))
        except BaseException:
            self._release(ticket)
            if self._closed:  # close() won the race and closed the runner: not an error
                return False
            raise
        return True

    def get_snapshot_copy(self) -> T | None:
        """A clone of the latest snapshot of the current generation, or None if there is none."""
        with self._lock:
            if not self._has_snapshot:
                return None
            snapshot = self._snapshot
        return self._policy.clone_snapshot(cast(T, snapshot))

    def is_poll_inflight(self) -> bool:
        """True while a fetch runs (including one started before `reset()`, still finishing)."""
        return self._inflight is not None

    def seconds_until_due(self) -> float | None:
        """Seconds until a fetch may start (0.0 if due now); None if one is in flight or closed."""
        with self._lock:
            if self._closed or self._inflight is not None:
                return None
            return max(0.0, self._next_due - self._clock())

    @property
    def generation(self) -> int:
        """Bumped by `reset()` and `close()`; fetches of older generations never deliver."""
        return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def reset(self) -> None:
        """Drop the snapshot and make every fetch started so far undeliverable.

        The next fetch may start at once (after the one in flight, if any, ends), and its
        snapshot is reported as a change even if it equals the pre-reset one. Waits for a hook
        running on another thread to return.
        """
        self._invalidate(closing=False)

    def close(self, timeout: float | None = None) -> None:
        """Stop for good: no new fetch starts, nothing more is delivered, the runner is joined.

        Idempotent. Raises `TimeoutError` if a fetch thread outlives `timeout`.
        """
        self._invalidate(closing=True)
        self._runner.close(timeout)

    def __enter__(self) -> IntervalSnapshotPoller[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"IntervalSnapshotPoller(generation={self._generation}, "
            f"inflight={self._inflight is not None}, closed={self._closed})"
        )

    # -- driver-facing API (used by poller_drivers) -------------------------------------------

    def _begin_fetch(self) -> _Ticket | None:
        with self._lock:
            if self._closed or self._inflight is not None or self._clock() < self._next_due:
                return None
            ticket = self._inflight = _Ticket(self._generation)
            self._gate = math.inf
            return ticket

    def _run_fetch(self, ticket: _Ticket) -> None:
        """Run one blocking fetch for `ticket` on the calling thread and settle it."""
        try:
            try:
                result = self._policy.fetch_snapshot()
                if inspect.isawaitable(result):
                    _discard(result)
                    raise TypeError(_ASYNC_FETCH_IN_THREAD)
            except Exception as error:
                self._settle_error(ticket, error)
            else:
                self._settle_value(ticket, result)
        finally:
            self._release(ticket)

    async def _run_fetch_async(self, ticket: _Ticket) -> None:
        """Run one fetch for `ticket`, awaiting it if it is async; cancellation delivers nothing."""
        try:
            try:
                result = self._policy.fetch_snapshot()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as error:
                self._settle_error(ticket, error)
            else:
                self._settle_value(ticket, result)
        finally:
            self._release(ticket)

    def _add_wake_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (from any thread) on `reset()` and `close()`; returns a remover."""
        with self._lock:
            self._wake_listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._wake_listeners:
                    self._wake_listeners.remove(listener)

        return remove

    # -- internals -----------------------------------------------------------------------------

    def _invalidate(self, *, closing: bool) -> None:
        with self._delivery_lock, self._lock:
            self._generation += 1
            self._snapshot = None
            self._has_snapshot = False
            self._last_reported = _UNSET
            self._next_due = -math.inf
            self._closed = self._closed or closing
            blocked = self._closed or self._inflight is not None
            self._gate = math.inf if blocked else -math.inf
            listeners = list(self._wake_listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                logger.exception("poller wake listener raised")

    def _settle_value(self, ticket: _Ticket, value: T) -> None:
        with self._lock:
            if ticket.generation != self._generation:
                return
            self._snapshot = value
            self._has_snapshot = True
            if self._last_reported is not _UNSET and _equal(self._last_reported, value):
                return
            self._last_reported = value
        self._dispatch(self._deliver_change, ticket.generation, value)

    def _settle_error(self, ticket: _Ticket, error: Exception) -> None:
        with self._lock:
            if ticket.generation != self._generation:
                return
        self._dispatch(self._deliver_error, ticket.generation, error)

    def _release(self, ticket: _Ticket) -> None:
        interval = self._read_interval()
        with self._lock:
            if self._inflight is not ticket:
                return
            self._inflight = None
            if ticket.generation == self._generation:
                self._next_due = self._clock() + interval
            self._gate = math.inf if self._closed else self._next_due

    def _read_interval(self) -> float:
        try:
            self._interval = validate_poll_interval(
                "policy.poll_interval_seconds", self._policy.poll_interval_seconds
            )
        except Exception:
            logger.exception("invalid poll interval; keeping %s s", self._interval)
        return self._interval

    def _dispatch(self, deliver: Callable[[int, P], None], generation: int, payload: P) -> None:
        try:
            self._dispatcher.dispatch(deliver, generation, payload)
        except Exception:
            logger.exception("dispatcher %r refused a poller callback", self._dispatcher)

    def _is_current(self, generation: int) -> bool:
        with self._lock:
            return generation == self._generation

    def _deliver_change(self, generation: int, value: T) -> None:
        with self._delivery_lock:
            if not self._is_current(generation):
                return
            try:
                self._policy.on_snapshot_changed(self._policy.clone_snapshot(value))
            except Exception:
                logger.exception("on_snapshot_changed raised; polling goes on")

    def _deliver_error(self, generation: int, error: Exception) -> None:
        with self._delivery_lock:
            if not self._is_current(generation):
                return
            try:
                self._policy.on_poll_error(error)
            except Exception:
                logger.exception("on_poll_error raised; polling goes on")
