"""What a GUI timer pays to ask "anything new?": `tick()` and a version check, in nanoseconds.

A 60 Hz QTimer calls `IntervalSnapshotPoller.tick()` and compares `VersionedStore.version`
with the version it last rendered, on every frame. Both must cost about as much as the
cheapest Python operations, measured in the same run: an empty method call (for `tick()`)
and a plain attribute read-and-compare (for the version check).
"""

from __future__ import annotations

import math

from bench.harness import Measurement, time_per_call
from reactive_services import (
    CallbackIntervalSnapshotPollerPolicy,
    InlineFetchRunner,
    IntervalSnapshotPoller,
    VersionedStore,
)
from reactive_services.testing import ManualFetchRunner

SCENARIO = "reactive"
_GOAL_NS = 1000.0  # 60 Hz leaves 16.7 ms a frame; 1 µs is 0.006 % of it
_PLATES = 384  # keys in the store (a 384-plate screen); the version check must not depend on it


class _Plain:
    """Baselines: an empty method and a plain attribute."""

    __slots__ = ("version",)

    def __init__(self) -> None:
        self.version = 7

    def noop(self) -> bool:
        return False


def _policy() -> CallbackIntervalSnapshotPollerPolicy[int]:
    return CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=lambda: 1,
        poll_interval_seconds_value=3600.0,
        clone_snapshot_fn=int,
    )


def _idle_poller() -> IntervalSnapshotPoller[int]:
    """A poller that fetched once and is not due again for an hour."""
    poller = IntervalSnapshotPoller(_policy(), runner=InlineFetchRunner())
    assert poller.tick()
    assert not poller.tick()
    return poller


def _busy_poller() -> IntervalSnapshotPoller[int]:
    """A poller with a fetch in flight (held by the runner, never completed)."""
    poller = IntervalSnapshotPoller(_policy(), runner=ManualFetchRunner())
    assert poller.tick()
    assert not poller.tick()
    return poller


def _row(
    name: str, ours_s: float, baseline_name: str, baseline_s: float, notes: str
) -> Measurement:
    ours_ns = ours_s * 1e9
    return Measurement(
        scenario=SCENARIO,
        name=name,
        unit="ns/call",
        ours=ours_ns,
        baselines={baseline_name: baseline_s * 1e9},
        lower_is_better=True,
        goal=f"< {_GOAL_NS:g} ns (free for a 60 Hz timer)",
        goal_met=math.isfinite(ours_ns) and ours_ns < _GOAL_NS,
        notes=notes,
    )


def run(quick: bool) -> list[Measurement]:
    min_time = 0.05 if quick else 0.2
    plain = _Plain()
    empty_call = time_per_call(plain.noop, min_time=min_time)

    idle, busy = _idle_poller(), _busy_poller()
    try:
        tick_idle = time_per_call(idle.tick, min_time=min_time)
        tick_busy = time_per_call(busy.tick, min_time=min_time)
    finally:
        idle.close()
        busy.close()

    store: VersionedStore[int, int] = VersionedStore()
    for plate in range(_PLATES):
        store.set(plate, plate, create=True)
    seen = store.version
    attribute_check = time_per_call(lambda: plain.version != seen, min_time=min_time)
    version_check = time_per_call(lambda: store.version != seen, min_time=min_time)

    return [
        _row(
            "tick(), nothing due",
            tick_idle,
            "empty method call",
            empty_call,
            "lock-free fast path: one clock read and one float compare",
        ),
        _row(
            "tick(), fetch in flight",
            tick_busy,
            "empty method call",
            empty_call,
            "lock-free fast path: the gate is +inf, no clock read",
        ),
        _row(
            f"store.version != seen ({_PLATES} keys)",
            version_check,
            "plain attribute != seen",
            attribute_check,
            "a property read; independent of the number of keys",
        ),
    ]
