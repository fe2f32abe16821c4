"""Real-thread stress: many threads call tick(), reset() and get_snapshot_copy() together.

Deliveries go through an AsyncioDispatcher to a loop thread (the stand-in GUI thread). Checked
afterwards from an ordered log: never two fetches at once; no change delivered after a
reset() returned carries a snapshot fetched before that reset began; a reader that reset never
sees an older snapshot; consecutive changes without a reset in between differ.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from reactive_services import (
    AsyncioDispatcher,
    CallbackIntervalSnapshotPollerPolicy,
    IntervalSnapshotPoller,
)

WAIT_S = 10.0
THREADS = 4
TARGET_CHANGES = 150  # stop early once this many changes were delivered
MIN_CHANGES = 20  # fewer than this by the deadline and the run proved nothing
DEADLINE_S = 3.0
CHANGES_PER_RESET = 2  # resets wait for deliveries, so a loaded machine still makes progress


def _work(steps: int) -> None:
    """Python-level busy work: a window in which the interpreter may switch threads."""
    for _ in range(steps):
        pass


class Snap:
    """`seq` orders fetches by start; equality looks at `value` only (a small domain)."""

    __slots__ = ("seq", "value")

    def __init__(self, seq: int, value: int) -> None:
        self.seq = seq
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snap) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]

    def clone(self) -> Snap:
        _work(1000)
        return Snap(self.seq, self.value)


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    """Let the interpreter switch threads far more often, so more interleavings happen."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("fine_grained_switching")
def test_many_threads_tick_reset_and_read(loop_thread: asyncio.AbstractEventLoop) -> None:
    log_lock = threading.Lock()
    log: list[tuple[str, int, int]] = []  # (event, seq, value)
    seq_counter = itertools.count(1)
    fetch_lock = threading.Lock()
    active = [0, 0]  # [now, max]
    started = [0]  # highest fetch seq started
    violations: list[str] = []
    changes = [0]
    next_reset_at = [0]
    enough = threading.Event()
    dispatcher = AsyncioDispatcher(loop_thread)

    def fetch() -> Snap:
        with fetch_lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            seq = next(seq_counter)
            started[0] = seq
        try:
            _work(2000)
            return Snap(seq, (seq // 3) % 2)
        finally:
            with fetch_lock:
                active[0] -= 1

    def on_changed(snapshot: Snap) -> None:
        if not dispatcher.is_dispatch_thread():
            violations.append("change callback off the loop thread")
        with log_lock:
            log.append(("change", snapshot.seq, snapshot.value))
            changes[0] += 1
        if changes[0] >= TARGET_CHANGES:
            enough.set()

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=fetch,
        poll_interval_seconds_value=1e-4,
        clone_snapshot_fn=Snap.clone,
        on_snapshot_changed_fn=on_changed,
    )
    poller = IntervalSnapshotPoller(policy, dispatcher=dispatcher)
    go = threading.Barrier(THREADS)

    def hammer(worker: int) -> None:
        go.wait(WAIT_S)
        deadline = time.monotonic() + DEADLINE_S
        for i in itertools.count():
            if enough.is_set() or time.monotonic() > deadline:
                return
            poller.tick()
            if i % 50 == worker and changes[0] >= next_reset_at[0]:
                next_reset_at[0] = changes[0] + CHANGES_PER_RESET
                with fetch_lock:
                    before = started[0]
                with log_lock:
                    log.append(("reset_begin", before, -1))
                poller.reset()
                with log_lock:
                    log.append(("reset_done", before, -1))
                copy = poller.get_snapshot_copy()
                if copy is not None and copy.seq <= before:
                    violations.append(f"read snapshot {copy.seq} fetched before reset ({before})")
            elif i % 5 == 0:
                poller.get_snapshot_copy()

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_S)
        assert not w.is_alive()
    poller.close()
    drained = threading.Event()
    dispatcher.dispatch(drained.set)
    assert drained.wait(WAIT_S)

    assert not violations
    assert active[1] == 1, f"{active[1]} fetches ran at once"
    assert changes[0] >= MIN_CHANGES, f"only {changes[0]} changes within {DEADLINE_S} s"
    newest_reset = 0  # seq bound of the newest completed reset
    open_resets = 0  # resets begun and not yet returned
    reset_touched = True  # a reset may have taken effect since the previous change
    previous_value = -1
    for event, seq, value in log:
        if event == "change":
            assert seq > newest_reset, f"change {seq} fetched before a completed reset"
            if not reset_touched:
                assert value != previous_value, f"change {seq} repeats value {value}"
            previous_value = value
            reset_touched = open_resets > 0
        else:
            reset_touched = True
            open_resets += 1 if event == "reset_begin" else -1
            if event == "reset_done":
                newest_reset = max(newest_reset, seq)
