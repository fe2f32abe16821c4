"""ThreadPollerDriver and AsyncioPollerDriver: they poll, wake on reset, stop cleanly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reactive_services import (
    AsyncioPollerDriver,
    CallbackIntervalSnapshotPollerPolicy,
    IntervalSnapshotPoller,
    ThreadPollerDriver,
)

WAIT_S = 5.0
LONG_INTERVAL_S = 60.0  # longer than any wait in these tests: a second fetch proves a wake


class Counter:
    """A fetch returning 1, 2, 3, ... and change hooks that signal when N arrived."""

    def __init__(self, want: int) -> None:
        self.fetched = 0
        self.changes: list[int] = []
        self.want = want
        self.enough = threading.Event()
        self.lock = threading.Lock()

    def fetch(self) -> int:
        with self.lock:
            self.fetched += 1
            return self.fetched

    def on_changed(self, snapshot: int) -> None:
        self.changes.append(snapshot)
        if len(self.changes) >= self.want:
            self.enough.set()

    def policy(self, interval: float) -> CallbackIntervalSnapshotPollerPolicy[int]:
        return CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=self.fetch,
            poll_interval_seconds_value=interval,
            clone_snapshot_fn=int,
            on_snapshot_changed_fn=self.on_changed,
        )


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_thread_driver_polls_and_leaves_no_thread() -> None:
    before = _threads()
    counter = Counter(want=5)
    poller = IntervalSnapshotPoller(counter.policy(0.001))
    driver = ThreadPollerDriver(poller)
    with poller, driver:
        running_inside = driver.running
        assert counter.enough.wait(WAIT_S)
    assert running_inside
    assert not driver.running
    assert _threads() == before
    assert counter.changes[:5] == [1, 2, 3, 4, 5]
    fetched = counter.fetched
    assert not poller.tick()  # closed: nothing more runs
    assert counter.fetched == fetched


def test_thread_driver_wakes_on_reset() -> None:
    counter = Counter(want=1)
    poller = IntervalSnapshotPoller(counter.policy(LONG_INTERVAL_S))
    with poller, ThreadPollerDriver(poller):
        assert counter.enough.wait(WAIT_S)
        counter.want, counter.enough = 2, threading.Event()
        poller.reset()
        assert counter.enough.wait(WAIT_S)
    assert counter.changes == [1, 2]


def test_thread_driver_stops_when_the_poller_closes() -> None:
    counter = Counter(want=1)
    poller = IntervalSnapshotPoller(counter.policy(LONG_INTERVAL_S))
    driver = ThreadPollerDriver(poller)
    driver.start()
    assert counter.enough.wait(WAIT_S)
    poller.close()
    driver.stop(timeout=WAIT_S)  # returns promptly: close() woke the sleeping driver
    assert not driver.running
    with pytest.raises(RuntimeError, match="already started"):
        driver.start()


def test_asyncio_driver_awaits_async_fetch_without_threads() -> None:
    before = _threads()
    counter = Counter(want=3)

    async def fetch() -> int:
        await asyncio.sleep(0)
        assert _threads() == before, "the asyncio driver must not start threads"
        return counter.fetch()

    async def main() -> None:
        reached = asyncio.Event()

        def on_changed(snapshot: int) -> None:
            counter.on_changed(snapshot)
            if counter.enough.is_set():
                reached.set()

        policy = CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=fetch,
            poll_interval_seconds_value=0.001,
            clone_snapshot_fn=int,
            on_snapshot_changed_fn=on_changed,
        )
        with IntervalSnapshotPoller(policy) as poller:
            async with AsyncioPollerDriver(poller) as driver:
                assert driver.running
                await asyncio.wait_for(reached.wait(), WAIT_S)
            assert not driver.running

    asyncio.run(main())
    assert counter.changes[:3] == [1, 2, 3]
    assert _threads() == before


def test_asyncio_driver_cancels_a_hanging_fetch_and_delivers_nothing() -> None:
    changes: list[int] = []

    async def main() -> None:
        entered = asyncio.Event()

        async def fetch() -> int:
            entered.set()
            await asyncio.get_running_loop().create_future()  # never resolves
            return 1

        policy = CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=fetch,
            poll_interval_seconds_value=1.0,
            on_snapshot_changed_fn=changes.append,
        )
        with IntervalSnapshotPoller(policy) as poller:
            driver = AsyncioPollerDriver(poller)
            driver.start()
            await asyncio.wait_for(entered.wait(), WAIT_S)
            assert poller.is_poll_inflight()
            await driver.aclose()
            assert not poller.is_poll_inflight()
            assert poller.seconds_until_due() is not None  # free for the next fetch

    asyncio.run(main())
    assert changes == []


def test_asyncio_driver_wakes_on_reset_from_another_thread() -> None:
    counter = Counter(want=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[int] = asyncio.Queue()
        policy = CallbackIntervalSnapshotPollerPolicy(
            fetch_snapshot_fn=counter.fetch,  # a quick plain fetch runs on the loop
            poll_interval_seconds_value=LONG_INTERVAL_S,
            clone_snapshot_fn=int,
            on_snapshot_changed_fn=lambda s: loop.call_soon(got.put_nowait, s),
        )
        with IntervalSnapshotPoller(policy) as poller:
            async with AsyncioPollerDriver(poller):
                assert await asyncio.wait_for(got.get(), WAIT_S) == 1
                resetter = threading.Thread(target=poller.reset)
                resetter.start()
                resetter.join(WAIT_S)
                assert await asyncio.wait_for(got.get(), WAIT_S) == 2

    asyncio.run(main())
