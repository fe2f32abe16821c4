"""IntervalSnapshotPoller with real threads: where fetches run, errors, hooks, close."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Iterator

import pytest

from reactive_services import (
    AsyncioDispatcher,
    CallbackIntervalSnapshotPollerPolicy,
    InlineFetchRunner,
    IntervalSnapshotPoller,
    IntervalSnapshotPollerPolicyABC,
)
from reactive_services.testing import FakeClock, ManualFetchRunner

WAIT_S = 5.0


def _identity(snapshot: int) -> int:
    return snapshot


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "poll_interval_seconds_value must be finite and > 0 seconds, got 0"),
        (-1.5, ValueError, "got -1.5"),
        (math.nan, ValueError, "got nan"),
        (math.inf, ValueError, "got inf"),
        (True, TypeError, "poll_interval_seconds_value must be a number of seconds, got True"),
        ("1", TypeError, "got '1'"),
    ],
)
def test_policy_rejects_bad_interval(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=lambda: 1,
            poll_interval_seconds_value=value,  # type: ignore[arg-type]
        )


def test_policy_rejects_non_callable_fetch() -> None:
    with pytest.raises(TypeError, match="fetch_snapshot_fn"):
        CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=42,  # type: ignore[arg-type]
            poll_interval_seconds_value=1.0,
        )


class CountingPolicy(IntervalSnapshotPollerPolicyABC[dict[str, int]]):
    """A subclassed policy: mutable dict snapshots, so cloning matters."""

    def __init__(self) -> None:
        self.fetches = 0
        self.changes: list[dict[str, int]] = []

    def fetch_snapshot(self) -> dict[str, int]:
        self.fetches += 1
        return {"n": self.fetches // 2}  # changes on every second fetch

    def clone_snapshot(self, snapshot: dict[str, int]) -> dict[str, int]:
        return dict(snapshot)

    @property
    def poll_interval_seconds(self) -> float:
        return 1.0

    def on_snapshot_changed(self, snapshot: dict[str, int]) -> None:
        self.changes.append(snapshot)


def test_subclassed_policy_inline_runner_reports_only_changes() -> None:
    policy = CountingPolicy()
    clock = FakeClock()
    with IntervalSnapshotPoller(policy, clock=clock, runner=InlineFetchRunner()) as poller:
        for _ in range(5):
            assert poller.tick()
            assert not poller.tick()  # interval not passed
            clock.advance(1.0)
        assert policy.fetches == 5
        assert policy.changes == [{"n": 0}, {"n": 1}, {"n": 2}]
        policy.changes[-1]["n"] = 99
        assert poller.get_snapshot_copy() == {"n": 2}
    assert not poller.tick()


@pytest.fixture
def gated_fetch() -> Iterator[tuple[threading.Event, list[int]]]:
    """A fetch that blocks until `release` is set and records the thread it ran on."""
    release = threading.Event()
    yield release, []
    release.set()


def test_tick_never_runs_the_fetch_on_the_calling_thread(
    gated_fetch: tuple[threading.Event, list[int]],
) -> None:
    release, fetch_threads = gated_fetch
    changed = threading.Event()
    seen: list[tuple[int, int]] = []

    def fetch() -> int:
        fetch_threads.append(threading.get_ident())
        assert release.wait(WAIT_S)
        return 7

    def on_changed(snapshot: int) -> None:
        seen.append((snapshot, threading.get_ident()))
        changed.set()

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=fetch,
        poll_interval_seconds_value=60.0,
        clone_snapshot_fn=_identity,
        on_snapshot_changed_fn=on_changed,
    )
    poller = IntervalSnapshotPoller(policy)
    try:
        assert poller.tick()  # returns while the fetch is still blocked
        assert poller.is_poll_inflight()
        assert not poller.tick()
        release.set()
        assert changed.wait(WAIT_S)
        assert seen[0][0] == 7
        assert fetch_threads[0] != threading.get_ident()
        assert poller.get_snapshot_copy() == 7
    finally:
        poller.close()
    assert not poller.is_poll_inflight()


def test_close_times_out_on_a_stuck_fetch_then_joins(
    gated_fetch: tuple[threading.Event, list[int]],
) -> None:
    release, _ = gated_fetch
    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=lambda: release.wait(WAIT_S),
        poll_interval_seconds_value=1.0,
    )
    poller = IntervalSnapshotPoller(policy)
    assert poller.tick()
    with pytest.raises(TimeoutError, match="still running"):
        poller.close(timeout=0.05)
    assert not poller.tick()
    release.set()
    poller.close()
    assert not poller.is_poll_inflight()


def test_errors_and_failing_hooks_never_stop_polling(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outcomes: list[object] = [ValueError("server down"), 1, 1, KeyError("bad"), 2]
    errors: list[str] = []
    changes: list[int] = []

    def fetch() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, int)
        return outcome

    def on_error(error: Exception) -> None:
        errors.append(repr(error))
        raise RuntimeError("error hook is broken too")

    def on_changed(snapshot: int) -> None:
        changes.append(snapshot)
        raise RuntimeError("change hook is broken")

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=fetch,
        poll_interval_seconds_value=0.5,
        clone_snapshot_fn=_identity,
        on_snapshot_changed_fn=on_changed,
        on_poll_error_fn=on_error,
    )
    with (
        caplog.at_level(logging.ERROR, logger="reactive_services"),
        IntervalSnapshotPoller(policy, clock=clock, runner=InlineFetchRunner()) as poller,
    ):
        for _ in range(5):
            assert poller.tick()
            clock.advance(0.5)
    assert errors == ["ValueError('server down')", "KeyError('bad')"]
    assert changes == [1, 2]
    assert sum("raised; polling goes on" in r.getMessage() for r in caplog.records) == 4


def test_async_fetch_under_tick_is_reported_not_leaked() -> None:
    errors: list[Exception] = []

    async def fetch() -> int:
        return 1

    policy = CallbackIntervalSnapshotPollerPolicy[int](
        fetch_snapshot_fn=fetch,
        poll_interval_seconds_value=1.0,
        on_poll_error_fn=errors.append,
    )
    with IntervalSnapshotPoller(policy, runner=InlineFetchRunner()) as poller:
        assert poller.tick()
    assert len(errors) == 1
    assert isinstance(errors[0], TypeError)
    assert "AsyncioPollerDriver" in str(errors[0])


def test_interval_is_read_after_every_fetch() -> None:
    clock = FakeClock()

    class Policy(CountingPolicy):
        interval = 1.0

        @property
        def poll_interval_seconds(self) -> float:
            return self.interval

    policy = Policy()
    with IntervalSnapshotPoller(policy, clock=clock, runner=InlineFetchRunner()) as poller:
        assert poller.tick()
        assert poller.seconds_until_due() == 1.0
        policy.interval = 3.0
        clock.advance(1.0)
        assert poller.tick()
        assert poller.seconds_until_due() == 3.0
        clock.advance(2.9)
        assert not poller.tick()
        clock.advance(0.1)
        assert poller.tick()


def test_a_hook_may_close_its_own_poller() -> None:
    closed = threading.Event()
    holder: list[IntervalSnapshotPoller[int]] = []

    def on_changed(_snapshot: int) -> None:
        holder[0].close()
        closed.set()

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=lambda: 1,
        poll_interval_seconds_value=1.0,
        on_snapshot_changed_fn=on_changed,
    )
    poller = IntervalSnapshotPoller(policy)
    holder.append(poller)
    assert poller.tick()
    assert closed.wait(WAIT_S)
    poller.close()  # joins the fetch thread the hook ran on
    assert poller.closed


def test_reset_waits_for_a_running_hook_on_another_thread() -> None:
    hook_entered = threading.Event()
    hook_release = threading.Event()
    reset_returned = threading.Event()

    def on_changed(_snapshot: int) -> None:
        hook_entered.set()
        assert hook_release.wait(WAIT_S)

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=lambda: 1,
        poll_interval_seconds_value=1.0,
        on_snapshot_changed_fn=on_changed,
    )
    poller = IntervalSnapshotPoller(policy)
    try:
        assert poller.tick()
        assert hook_entered.wait(WAIT_S)

        def reset_then_signal() -> None:
            poller.reset()
            reset_returned.set()

        resetter = threading.Thread(target=reset_then_signal)
        resetter.start()
        assert not reset_returned.wait(0.05)  # still blocked behind the running hook
        hook_release.set()
        assert reset_returned.wait(WAIT_S)
        resetter.join(WAIT_S)
    finally:
        hook_release.set()
        poller.close()


def test_refusing_dispatcher_is_logged_and_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    clock = FakeClock()
    policy = CountingPolicy()
    poller = IntervalSnapshotPoller(
        policy, dispatcher=AsyncioDispatcher(loop), clock=clock, runner=InlineFetchRunner()
    )
    with caplog.at_level(logging.ERROR, logger="reactive_services"), poller:
        assert poller.tick()
        clock.advance(1.0)
        assert poller.tick()
    assert policy.fetches == 2
    assert any("refused a poller callback" in r.getMessage() for r in caplog.records)


def test_tick_losing_the_race_with_close_returns_false() -> None:
    """close() lands between tick() reserving the fetch and handing it to the runner."""
    holder: list[IntervalSnapshotPoller[int]] = []

    class CloseFirstRunner(ManualFetchRunner):
        def start(self, job: Callable[[], None]) -> None:
            holder[0].close()  # closes this runner too, so the hand-off below is refused
            super().start(job)

    poller = IntervalSnapshotPoller(
        CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=lambda: 1, poll_interval_seconds_value=1.0
        ),
        runner=CloseFirstRunner(),
    )
    holder.append(poller)
    assert poller.tick() is False
    assert not poller.is_poll_inflight()
    assert poller.closed


def test_runner_failure_on_an_open_poller_propagates_and_frees_the_slot() -> None:
    class BrokenRunner(ManualFetchRunner):
        def start(self, job: Callable[[], None]) -> None:
            raise OSError("can't start new thread")

    poller = IntervalSnapshotPoller(
        CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=lambda: 1, poll_interval_seconds_value=1.0
        ),
        runner=BrokenRunner(),
    )
    with pytest.raises(OSError, match="can't start new thread"):
        poller.tick()
    assert not poller.is_poll_inflight()
    assert poller.seconds_until_due() is not None
