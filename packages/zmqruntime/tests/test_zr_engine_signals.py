"""ExecutionSignals: who is woken by what, liveness bookkeeping, bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.engines import ExecutionSignals, WakeReason
from zmqruntime.testing import ManualClock, asyncio_test

#: A wait that must not be woken is given this long to prove it; it is a bound, not a sync.
QUIET = 0.02


@asyncio_test
async def test_an_event_wakes_only_the_watchers_of_its_execution() -> None:
    signals = ExecutionSignals()
    with signals.watch("a") as watch_a, signals.watch("b") as watch_b:
        # The callback runs once this task is suspended inside wait(): a real wake-up.
        asyncio.get_running_loop().call_soon(signals.notify_event, "a", "e1")
        assert await watch_a.wait(60.0) is WakeReason.EVENT
        assert await watch_b.wait(QUIET) is WakeReason.TIMEOUT


@asyncio_test
async def test_an_event_that_arrives_while_the_poller_is_busy_is_not_lost() -> None:
    signals = ExecutionSignals()
    with signals.watch("a") as watch:
        signals.notify_event("a", "e1")  # nobody is waiting yet
        signals.notify_event("a", "e1")
        assert await watch.wait(60.0) is WakeReason.EVENT  # at once, and only once
        assert await watch.wait(QUIET) is WakeReason.TIMEOUT


@asyncio_test
async def test_heartbeats_refresh_liveness_without_waking_anyone() -> None:
    clock = ManualClock(start=50.0)
    signals = ExecutionSignals(clock=clock)
    with signals.watch("a") as watch:
        assert watch.last_sign_of_life is None
        assert signals.last_sign_of_life("a") is None
        signals.notify_heartbeat("e1")
        assert await watch.wait(QUIET) is WakeReason.TIMEOUT
        assert watch.last_sign_of_life == signals.last_sign_of_life("a") == 50.0
        clock.now = 51.0
        signals.notify_event("a", "e1", wake=False)  # a progress event: life, no re-poll
        assert await watch.wait(QUIET) is WakeReason.TIMEOUT
        assert watch.last_sign_of_life == 51.0
        clock.now = 52.0
        signals.notify_event("z", "e1")  # another execution: not our life
        assert watch.last_sign_of_life == 51.0
        assert signals.last_sign_of_life("unwatched") == 50.0  # heartbeats count for all


@asyncio_test
async def test_an_epoch_change_wakes_every_watcher_and_outranks_events() -> None:
    signals = ExecutionSignals()
    signals.notify_heartbeat("e1")
    with signals.watch("a") as watch_a, signals.watch("b") as watch_b:
        assert watch_a.epoch_at_start == "e1"
        signals.notify_event("a", "e1")
        signals.notify_event("b", "e2")  # first word from a restarted server
        signals.notify_event("a", "e2")  # an event after the change does not mask it
        assert await watch_a.wait(60.0) is WakeReason.EPOCH_CHANGED
        assert await watch_b.wait(60.0) is WakeReason.EPOCH_CHANGED
        assert signals.current_epoch == "e2"
        assert signals.epoch_changes == 1
        assert signals.last_heartbeat is None  # the old server's heartbeats prove nothing
        signals.notify_heartbeat("e2")
        assert signals.last_heartbeat is not None
        assert await watch_a.wait(QUIET) is WakeReason.TIMEOUT


@settings(max_examples=30)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["watch", "close", "event", "heartbeat"]), st.integers(0, 4)),
        max_size=40,
    )
)
def test_memory_is_bounded_by_open_watches(ops: list[tuple[str, int]]) -> None:
    """Whatever the interleaving, the hub holds state only for executions being watched."""

    async def scenario() -> None:
        signals = ExecutionSignals()
        open_watches: list[Any] = []
        for op, n in ops:
            if op == "watch":
                open_watches.append(signals.watch(f"x{n}"))
            elif op == "close" and open_watches:
                open_watches.pop(n % len(open_watches)).close()
            elif op == "event":
                signals.notify_event(f"x{n}", "e1")
            else:
                signals.notify_heartbeat("e1")
            watched = {w.execution_id for w in open_watches}
            assert signals.watched_executions == len(watched)
        for watch in open_watches:
            watch.close()
            watch.close()  # idempotent
        assert signals.watched_executions == 0

    asyncio.run(scenario())
